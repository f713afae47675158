"""The listener codecs without a broker: every frame gets exactly one reply of the right kind."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.codecs import Hl7Codec, LineCodec, LineDecoder
from services.ingest.server import Accepted, Frame, FramingFault, Refused
from tests.support.sockets import ack_code

RECEIVED = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
HL7_DIR = Path(__file__).resolve().parents[1] / "data" / "hl7"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "hl7"
PHILIPS = (SHARED / "philips-pic-ix-pocd-ig" / "pic_ix_example_numerics_ORU_R01.hl7").read_bytes()
VALID = [PHILIPS, *(p.read_bytes() for p in sorted(HL7_DIR.glob("*.hl7")))]


def unframed(reply: bytes) -> bytes:
    assert reply.startswith(b"\x0b")
    assert reply.endswith(b"\x1c\r")
    return reply[1:-2]


def test_a_valid_pcd01_message_is_accepted_with_a_commit_ack_and_a_dedupe_key() -> None:
    outcome = Hl7Codec().interpret(Frame(PHILIPS.strip()), RECEIVED)
    assert isinstance(outcome, Accepted)
    assert [r.topic for r in outcome.records] == ["vitals"]
    assert ack_code(unframed(outcome.reply)) == "CA"
    assert ack_code(unframed(outcome.unavailable_reply)) == "CR"
    assert (
        outcome.dedupe_key == " SendingApplication|SendingFacility|HP0425230332.872USDANRMMD1NBR488"
    )


def test_original_mode_senders_get_aa_ae_ar() -> None:
    message = (
        b"MSH|^~\\&|MON|ICU|VIG|HOSP|20261122085900+0000||ORU^R01|c9|P|2.5\r"
        b"PID|||p1^^^^MR\rOBR|1|||x|||20261122085800+0000\r"
        b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|94|262688^MDC_DIM_PERCENT^MDC"
    )
    codec = Hl7Codec()
    accepted = codec.interpret(Frame(message), RECEIVED)
    assert isinstance(accepted, Accepted)
    assert ack_code(unframed(accepted.reply)) == "AA"
    assert ack_code(unframed(accepted.unavailable_reply)) == "AR"
    no_patient = codec.interpret(Frame(message.replace(b"p1^^^^MR", b"")), RECEIVED)
    assert isinstance(no_patient, Refused)
    assert no_patient.reply is not None
    assert ack_code(unframed(no_patient.reply)) == "AE"
    assert no_patient.error.reason == "no_patient_identity"


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=600),
        st.sampled_from(VALID).flatmap(
            lambda m: st.integers(0, len(m)).map(lambda n: m[:n])  # truncated messages
        ),
        st.tuples(
            st.sampled_from(VALID), st.integers(0, 2000), st.binary(min_size=1, max_size=8)
        ).map(lambda t: t[0][: t[1] % len(t[0])] + t[2] + t[0][t[1] % len(t[0]) + 1 :]),
    )
)
def test_any_bytes_get_exactly_one_ack_or_nak(payload: bytes) -> None:
    outcome = Hl7Codec().interpret(Frame(payload), RECEIVED)
    if isinstance(outcome, Accepted):
        assert ack_code(unframed(outcome.reply)) in {"AA", "CA"}
    else:
        assert outcome.reply is not None
        assert ack_code(unframed(outcome.reply)) in {"AE", "AR", "CE", "CR"}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_line_gets_one_reply_line(payload: bytes) -> None:
    codec = LineCodec("crrt")
    outcome = codec.interpret(Frame(payload.replace(b"\n", b" "), seq=7), RECEIVED)
    reply = outcome.reply
    assert reply is not None
    assert reply.endswith(b"\n")
    assert reply.count(b"\n") == 1
    assert reply.startswith(b"OK 7" if isinstance(outcome, Accepted) else b"ERR 7")


@given(
    st.lists(st.tuples(st.binary(max_size=40), st.sampled_from([b"\n", b"\r\n"])), max_size=20),
    st.integers(1, 50),
)
def test_line_framing_does_not_depend_on_chunking(
    lines: list[tuple[bytes, bytes]], chunk: int
) -> None:
    stream = b"".join(line.replace(b"\n", b"") + end for line, end in lines)
    whole = LineDecoder(max_line_bytes=32).feed(stream)
    decoder = LineDecoder(max_line_bytes=32)
    pieces: list[Frame | FramingFault] = []
    for at in range(0, len(stream), chunk):
        pieces += decoder.feed(stream[at : at + chunk])
    assert [_comparable(u) for u in pieces] == [_comparable(u) for u in whole]


def _comparable(unit: Frame | FramingFault) -> tuple[object, ...]:
    if isinstance(unit, Frame):
        return ("frame", unit.seq, unit.payload)
    return ("fault", unit.seq, unit.original, unit.error.reason, str(unit.error))


def test_a_line_of_the_maximum_length_with_crlf_split_between_reads_is_a_line() -> None:
    decoder = LineDecoder(max_line_bytes=8)
    assert decoder.feed(b"12345678\r") == []
    (unit,) = decoder.feed(b"\n")
    assert isinstance(unit, Frame)
    assert unit.payload == b"12345678"


def test_a_last_line_without_lf_is_kept_as_a_fault_at_the_end_of_the_stream() -> None:
    decoder = LineDecoder(max_line_bytes=64)
    assert decoder.feed(b"NIRS v=1 partial") == []
    assert decoder.in_frame
    (fault,) = decoder.close()
    assert (fault.original, fault.reply_expected) == (b"NIRS v=1 partial", False)


def test_an_hl7_message_without_msh10_is_not_deduplicated() -> None:
    message = (
        b"MSH|^~\\&|MON|ICU|VIG|HOSP|20261122085900+0000||ORU^R01||P|2.5\r"
        b"PID|||p1^^^^MR\rOBR|1|||x|||20261122085800+0000\r"
        b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|94|262688^MDC_DIM_PERCENT^MDC"
    )
    outcome = Hl7Codec().interpret(Frame(message), RECEIVED)
    assert isinstance(outcome, Accepted)
    assert outcome.dedupe_key is None
