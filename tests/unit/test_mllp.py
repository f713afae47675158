"""MLLP framing: frames, framing errors, and chunking that never changes the result."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.mllp import MllpDecoder, MllpError, MllpEvent, MllpFrame, encode_frame

VT, FS, CR = b"\x0b", b"\x1c", b"\r"


def frames(events: list[MllpEvent]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, MllpFrame)]


def errors(events: list[MllpEvent]) -> list[MllpError]:
    return [e for e in events if isinstance(e, MllpError)]


def test_one_frame_and_encode_round_trip() -> None:
    decoder = MllpDecoder(max_frame_bytes=100)
    assert decoder.feed(encode_frame(b"MSH|a\rPID|1")) == [MllpFrame(b"MSH|a\rPID|1")]
    assert not decoder.in_frame


def test_frames_split_anywhere_including_between_fs_and_cr() -> None:
    decoder = MllpDecoder(max_frame_bytes=100)
    assert decoder.feed(VT + b"MSH|a" + FS) == []
    assert decoder.in_frame
    assert decoder.feed(CR + VT + b"MSH") == [MllpFrame(b"MSH|a")]
    assert decoder.feed(b"|b" + FS + CR) == [MllpFrame(b"MSH|b")]


def test_whitespace_between_frames_is_ignored() -> None:
    decoder = MllpDecoder(max_frame_bytes=100)
    events = decoder.feed(b"\r\n " + encode_frame(b"A") + b"\n" + encode_frame(b"B") + b"\r\n")
    assert events == [MllpFrame(b"A"), MllpFrame(b"B")]
    assert decoder.close() == []


def test_fs_without_cr_still_ends_the_frame() -> None:
    decoder = MllpDecoder(max_frame_bytes=100)
    assert decoder.feed(VT + b"A" + FS + VT + b"B" + FS + CR) == [MllpFrame(b"A"), MllpFrame(b"B")]


def test_oversize_frame_is_reported_once_and_skipped() -> None:
    decoder = MllpDecoder(max_frame_bytes=100)
    big = b"MSH|" + bytes(range(48, 120)) * 4
    events = decoder.feed(VT + big[:50]) + decoder.feed(big[50:] + FS + CR + encode_frame(b"ok"))
    assert frames(events) == [b"ok"]
    (error,) = errors(events)
    assert error.kind == "oversize_frame"
    assert error.preview == big[:100]  # the first max_frame_bytes, kept for the dead letter
    assert "100 bytes" in error.message
    assert not decoder.in_frame


def test_frame_of_exactly_the_limit_passes() -> None:
    decoder = MllpDecoder(max_frame_bytes=5)
    assert decoder.feed(encode_frame(b"12345")) == [MllpFrame(b"12345")]
    assert errors(decoder.feed(encode_frame(b"123456")))[0].kind == "oversize_frame"


def test_bytes_outside_a_frame_are_reported_once_per_run() -> None:
    decoder = MllpDecoder(max_frame_bytes=100)
    events = decoder.feed(b"GET / HTTP/1.1\r\n") + decoder.feed(b"Host: x\r\n" + encode_frame(b"A"))
    assert frames(events) == [b"A"]
    (error,) = errors(events)
    assert error.kind == "outside_frame"
    assert error.preview == b"GET / HTTP/1.1\r\nHost: x\r\n"


def test_long_garbage_is_reported_without_waiting_for_a_frame() -> None:
    decoder = MllpDecoder(max_frame_bytes=100)
    events = decoder.feed(b"z" * 1000)
    assert [e.kind for e in errors(events)] == ["outside_frame"]
    assert decoder.feed(b"z" * 1000) == []  # same run: not reported again


def test_start_block_inside_a_frame_restarts_it() -> None:
    decoder = MllpDecoder(max_frame_bytes=100)
    events = decoder.feed(VT + b"half" + encode_frame(b"whole"))
    assert frames(events) == [b"whole"]
    assert [e.kind for e in errors(events)] == ["unterminated_frame"]


def test_close_reports_an_unterminated_frame_and_pending_garbage() -> None:
    decoder = MllpDecoder(max_frame_bytes=100)
    decoder.feed(VT + b"MSH|partial")
    assert [e.kind for e in decoder.close()] == ["unterminated_frame"]
    decoder.feed(b"junk")
    assert [e.kind for e in decoder.close()] == ["outside_frame"]
    decoder.feed(VT + b"done" + FS)
    assert decoder.close() == [MllpFrame(b"done")]


@pytest.mark.parametrize("payload", [b"a\x0bb", b"a\x1cb"])
def test_encode_frame_refuses_unframeable_payloads(payload: bytes) -> None:
    with pytest.raises(ValueError, match="0x0B or 0x1C"):
        encode_frame(payload)


def test_max_frame_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        MllpDecoder(max_frame_bytes=0)


_payload = st.binary(max_size=40).map(lambda b: b.replace(VT, b"").replace(FS, b""))
_piece = st.one_of(
    _payload.map(encode_frame),
    st.sampled_from([b"\r\n", b"junk", VT, FS, CR, VT + b"x", FS + CR]),
    st.binary(max_size=8),
)


def _decode(stream: bytes, cuts: list[int], limit: int) -> list[MllpEvent]:
    decoder = MllpDecoder(max_frame_bytes=limit)
    events: list[MllpEvent] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        events += decoder.feed(stream[start:cut])
        start = max(start, cut)
    return events + decoder.close()


@given(
    pieces=st.lists(_piece, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=20),
    limit=st.integers(min_value=1, max_value=64),
)
def test_chunking_never_changes_frames_or_errors(
    pieces: list[bytes], cuts: list[int], limit: int
) -> None:
    stream = b"".join(pieces)
    whole = _decode(stream, [], limit)
    assert _decode(stream, cuts, limit) == whole
    assert _decode(stream, list(range(len(stream))), limit) == whole  # byte by byte


@given(payloads=st.lists(_payload, max_size=8), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_well_framed_streams_yield_exactly_their_payloads(
    payloads: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    assert _decode(stream, cuts, 64) == [MllpFrame(p) for p in payloads]
