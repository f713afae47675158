"""Property: whatever the bytes, the HL7 core refuses with InputRefusedError or parses.

The unguarded core (``_parse``) is exercised, so a bug cannot hide behind the
last-resort guard of :func:`parse_hl7`; every ACK built for the outcome is frameable.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.ingest import InputRefusedError, hl7
from services.ingest.hl7 import _parse, build_ack, parse_hl7, recover_header
from services.ingest.mllp import encode_frame

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "tests" / "data" / "hl7").glob("*.hl7")) + sorted(
    p for p in (ROOT.parent / "shared" / "data" / "hl7").rglob("*") if p.is_file()
)
MESSAGES = [p.read_bytes() for p in SAMPLES]
RECEIVED = datetime(2026, 3, 6, 12, tzinfo=UTC)
REASONS = {"hl7_parse_error", "unsupported_message_type", "invalid_message", "no_patient_identity"}
TOKENS = [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"MSH", b"OBX", b"PID", b"\\X", b"\\F\\"]
TOKENS += [b"\xff", b"\x00", b"\x0b", b"\x1c", b"1.0.0.0", b"20261340", b"-0400", b"NM", b"X"]


def check(raw: bytes) -> None:
    """Parse; on refusal build the NAK; either way the ACK must be frameable."""
    refusal: InputRefusedError | None = None
    try:
        message = _parse(raw, received_at=RECEIVED, site_tz=UTC)
    except InputRefusedError as error:
        refusal = error
    if refusal is not None:
        assert refusal.reason in REASONS
        ack = build_ack("AE", header=None, raw=raw, now=RECEIVED, error=refusal, control_id="x")
    else:
        for record in message.records:
            record.value()
        ack = build_ack("AA", header=message.header, raw=raw, now=RECEIVED, control_id="x")
    encode_frame(ack)
    recover_header(raw)


def test_the_samples_are_there() -> None:
    assert len(MESSAGES) >= 14


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=400))
@example(raw=b"MSH")
@example(raw=b"MSH|")
@example(raw=b"MSH\r|")
@example(raw=b"MSH|^~\\&|\x80")
def test_random_bytes_never_crash(raw: bytes) -> None:
    check(raw)
    check(b"MSH|^~\\&|" + raw)


@settings(max_examples=300)
@given(index=st.integers(0, len(MESSAGES) - 1), cut=st.integers(0, 2000))
def test_truncated_messages_never_crash(index: int, cut: int) -> None:
    check(MESSAGES[index][:cut])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(MESSAGES)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "token"]))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        else:
            data[at:at] = draw(st.sampled_from(TOKENS))
    return bytes(data)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(raw=mutated())
def test_mutated_messages_never_crash(raw: bytes) -> None:
    check(raw)


@settings(max_examples=200)
@given(text=st.text(max_size=200))
def test_text_in_any_field_never_crashes(text: str) -> None:
    base = MESSAGES[0].decode("utf-8")
    for field in ("MRN0042", "07", "20260301080000+0100", "A01"):
        check(base.replace(field, text, 1).encode("utf-8", errors="surrogatepass"))


def test_the_public_function_turns_an_internal_bug_into_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(hl7, "_parse", boom)
    with pytest.raises(InputRefusedError, match="internal error") as info:
        parse_hl7(MESSAGES[0], received_at=RECEIVED, site_tz=UTC)
    assert info.value.reason == "invalid_message"
