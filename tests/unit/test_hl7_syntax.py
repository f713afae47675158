"""HL7 v2 syntax layer: DTM, escapes, delimiters, character sets, header recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.ingest import InputRefusedError
from services.ingest.hl7_syntax import (
    Encoding,
    decode_message,
    dtm_offset,
    escape,
    parse_dtm,
    recover_header,
)

PLUS2 = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026", datetime(2026, 1, 1, tzinfo=UTC)),
        ("202603", datetime(2026, 3, 1, tzinfo=UTC)),
        ("20260301", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026030112", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("202603011234", datetime(2026, 3, 1, 12, 34, tzinfo=UTC)),
        ("20260301123456", datetime(2026, 3, 1, 12, 34, 56, tzinfo=UTC)),
        ("20260301123456.7", datetime(2026, 3, 1, 12, 34, 56, 700000, tzinfo=UTC)),
        ("20260301123456.1234", datetime(2026, 3, 1, 12, 34, 56, 123400, tzinfo=UTC)),
        ("20260301123456-0430", datetime(2026, 3, 1, 17, 4, 56, tzinfo=UTC)),
        ("202603011234+0545", datetime(2026, 3, 1, 6, 49, tzinfo=UTC)),
        ("20260301123456^S", datetime(2026, 3, 1, 12, 34, 56, tzinfo=UTC)),  # TS precision
        (" 20260301123456 ", datetime(2026, 3, 1, 12, 34, 56, tzinfo=UTC)),
    ],
)
def test_dtm_valid(text: str, expected: datetime) -> None:
    assert parse_dtm(text.split("^")[0], site_tz=UTC) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "26",
        "20260",
        "2026030112345",
        "20261301",
        "20260230",
        "20260301250000",
        "20260301126000",
        "20260301.5",
        "20260301123456.",
        "20260301123456.1234567",
        "20260301123456+01",
        "20260301123456+1500",
        "20260301123456+0160",
        "2026-03-01T12:34:56Z",
        "00000101",
        "２０２６０３０１",  # full-width digits
    ],
)
def test_dtm_nonsense_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"HL7 date/time|fractional"):
        parse_dtm(text, site_tz=UTC)


def test_dtm_without_offset_uses_msh7_offset_then_site_zone() -> None:
    assert parse_dtm("202603011200", default_tz=PLUS2, site_tz=UTC).hour == 10
    paris = ZoneInfo("Europe/Paris")
    assert parse_dtm("202607011200", site_tz=paris).hour == 10  # summer time
    assert parse_dtm("202601011200", site_tz=paris).hour == 11
    assert parse_dtm("202601011200+0000", default_tz=PLUS2, site_tz=paris).hour == 12
    assert dtm_offset("20260101120000-0400") == timezone(timedelta(hours=-4))
    assert dtm_offset("20260101120000") is None
    assert dtm_offset("junk") is None


def test_escape_sequences_and_formatting() -> None:
    msg = decode_message(
        b"MSH|^~\\&|A\rNTE|1||" + rb"a\F\b\S\c\T\d\R\e\E\f\H\bold\N\ \X41C3A9\ \.br\x \Q\ \X4\ \E"
    )
    assert msg.text(msg.segments[1], 3) == "a|b^c&d~e\\fbold Aé \nx \\Q\\ \\X4\\ \\E"


def test_escape_round_trip_with_custom_delimiters() -> None:
    enc = Encoding.from_msh("#", "$*%!")
    text = "a#b$c*d%e!f"
    escaped = escape(text, enc)
    assert escaped == "a%F%b%S%c%R%d%E%e%T%f"
    msg = decode_message(f"MSH#$*%!\rNTE#1##{escaped}".encode())
    assert msg.text(msg.segments[1], 3) == text


def test_truncation_character_of_v27() -> None:
    enc = Encoding.from_msh("|", "^~\\&#")
    assert (enc.truncation, enc.msh2) == ("#", "^~\\&#")
    assert escape("50#", enc) == "50\\P\\"


@pytest.mark.parametrize(
    "raw",
    [b"MSH|^~\\&\x0b|", b"MSH|^~\\^|", b"MSHA^~\\&", b"MSH\x1c^~\\&", b"MSH|^a\\&|", b"MSH||"],
)
def test_bad_delimiters_are_refused(raw: bytes) -> None:
    with pytest.raises(InputRefusedError) as info:
        decode_message(raw)
    assert info.value.reason == "hl7_parse_error"


def test_short_msh2_takes_default_delimiters() -> None:
    assert decode_message(b"MSH|^~\\|x").encoding.subcomponent == "&"


@pytest.mark.parametrize(
    ("charset", "encoded", "codec"),
    [
        ("8859/1", "Jörg".encode("latin-1"), "latin-1"),
        ("8859/15", "5 €".encode("iso8859-15"), "iso8859-15"),
        ("UNICODE UTF-8", "Jörg".encode(), "utf-8"),
        ("", "Jörg".encode(), "utf-8"),
        ("ASCII", b"Joerg", "ascii"),
    ],
)
def test_character_sets(charset: str, encoded: bytes, codec: str) -> None:
    raw = b"MSH|^~\\&||||||||||||||||" + charset.encode() + b"\rNTE|1||" + encoded
    msg = decode_message(raw)
    assert msg.codec == codec
    assert msg.text(msg.segments[1], 3) == encoded.decode(codec)
    assert msg.warnings == ()


def test_undecodable_bytes_fall_back_to_latin1_with_a_warning() -> None:
    msg = decode_message(b"MSH|^~\\&||||||||||||||||ASCII\rNTE|1||J\xf6rg")
    assert msg.text(msg.segments[1], 3) == "Jörg"
    assert "ISO 8859-1" in msg.warnings[0]


def test_unknown_charset_name_warns() -> None:
    msg = decode_message(b"MSH|^~\\&||||||||||||||||KLINGON")
    assert "KLINGON" in msg.warnings[0]


def test_recover_header_from_damaged_bytes() -> None:
    header = recover_header(b"junk\nMSH#$*%!#APP$1#FAC#####ADT$A01#c9#T#2.3\nPID#\xff\x00")
    assert header is not None
    assert (header.sending_application, header.sending_facility) == ("APP$1", "FAC")
    assert (header.message_type, header.trigger_event) == ("ADT$A01", "A01")
    assert (header.control_id, header.processing_id, header.version_id) == ("c9", "T", "2.3")
    assert header.encoding.field == "#"


@pytest.mark.parametrize("raw", [None, b"", b"MSH", b"MSH\r|", b"xMSH1^~", b"no header"])
def test_recover_header_gives_up_cleanly(raw: bytes | None) -> None:
    assert recover_header(raw) is None


def test_recover_header_reads_utf8_then_latin1() -> None:
    utf8 = recover_header("MSH|^~\\&|Gerät|Station 3|".encode())
    latin1 = recover_header("MSH|^~\\&|Gerät|Station 3|".encode("latin-1"))
    assert utf8 is not None
    assert latin1 is not None
    assert utf8.sending_application == latin1.sending_application == "Gerät"
