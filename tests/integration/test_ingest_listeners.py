"""Listeners for real: `vigil hl7|nirs|context listen` processes, real sockets, a real broker.

What a sender is told matches what is on the topics: a positive ack only for
records Kafka holds, a negative ack plus a dead letter with the original bytes for
bad input, one record for a resent (duplicate) message, and a bad or idle peer does
not stall the others.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.codes import Quantity
from schemas.deadletter import DeadLetter
from schemas.observations import LabResults, NirsSample, VitalSigns
from services.kafka_local import free_port
from tests.support.sockets import LineClient, MllpClient, ack_code
from tests.support.stack import Stack, unique_prefix

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "hl7"
PHILIPS = (SHARED / "philips-pic-ix-pocd-ig" / "pic_ix_example_numerics_ORU_R01.hl7").read_bytes()
LAB = (Path(__file__).resolve().parents[1] / "data" / "hl7" / "lab_oru_r01.hl7").read_bytes()
PHILIPS_ID = b"HP0425230332.872USDANRMMD1NBR488"


def philips(control_id: str) -> bytes:
    return PHILIPS.strip().replace(PHILIPS_ID, control_id.encode())


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(kafka_bootstrap, tmp_path_factory.mktemp("ingest"), unique_prefix("ingest"))
    stack.create_topics()
    try:
        yield stack
    finally:
        stack.stop_all()


HL7_METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def hl7_port(stack: Stack) -> int:
    _proc, port = stack.start_listener(
        "hl7",
        env={
            "VIGIL_INGEST_MAX_MESSAGE_BYTES": "4096",
            "VIGIL_INGEST_IDLE_TIMEOUT_S": "3",
            "VIGIL_INGEST_METRICS_PORT": str(HL7_METRICS_PORT),
        },
    )
    return port


def listener_metric(name: str, labels: str) -> float:
    url = f"http://127.0.0.1:{HL7_METRICS_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def dead_letters(stack: Stack, source: str) -> list[DeadLetter]:
    letters = [DeadLetter.model_validate_json(v) for v in stack.read_all("deadletter", 2)]
    return [letter for letter in letters if letter.source == source]


def test_a_mixed_hl7_session_gets_the_right_acks_records_and_dead_letters(
    stack: Stack, hl7_port: int
) -> None:
    client = MllpClient(hl7_port)
    garbage = b"this is not HL7 at all"
    unsupported = b"MSH|^~\\&|MON|ICU|VIGIL|HOSP|20260101120000||QRY^A19|Q1|P|2.5\rQRD|x"
    try:
        first = client.send(philips("S1-0001"))
        broken = client.send(garbage)
        resent = client.send(philips("S1-0001"))
        refused_type = client.send(unsupported)
        lab = client.send(LAB)
        # Bytes outside any frame: kept as a dead letter, no reply expected; the
        # connection goes on.
        client.send_raw(b"stray bytes between frames")
        second = client.send(philips("S1-0002"))
    finally:
        client.close()

    # PCD-01 asks for accept acks (MSH-15 AL): commit accept / error / reject.
    assert ack_code(first) == "CA"
    assert b"MSA|CA|S1-0001" in first
    assert ack_code(broken) == "AE"  # no header to read: original mode, application error
    assert b"ERR|" in broken
    assert ack_code(resent) == "CA"
    assert ack_code(refused_type) == "AR"
    assert b"MSA|AR|Q1" in refused_type
    assert ack_code(lab) == "CA"
    assert ack_code(second) == "CA"

    vitals = [VitalSigns.model_validate_json(v) for v in stack.read_all("vitals")]
    ids = [v.source.message_control_id for v in vitals]
    assert sorted(ids) == ["S1-0001", "S1-0002"]  # the resent message was published once
    sample = next(v for v in vitals if v.source.message_control_id == "S1-0001")
    assert sample.patient_id == "12345"
    assert sample.bed == "Bed1"
    heart_rate = [m for m in sample.measurements if m.code == "147842"]
    assert [(m.value, m.unit) for m in heart_rate] == [(60.0, "/min")]

    labs = [LabResults.model_validate_json(v) for v in stack.read_all("labs")]
    assert [lab.source.message_control_id for lab in labs] == ["LAB000123"]
    creatinine = [m for m in labs[0].measurements if m.code == "2160-0"]
    assert creatinine[0].value == pytest.approx(2.0, abs=0.01)  # 176.84 umol/L

    assert (
        listener_metric("vigil_ingest_messages_total", '{adapter="hl7",outcome="duplicate"}') == 1
    )
    assert listener_metric("vigil_ingest_records_total", '{adapter="hl7",topic="labs"}') == 1

    letters = dead_letters(stack, "hl7")
    originals = {letter.original: letter.reason for letter in letters}
    assert originals[garbage] == "hl7_parse_error"
    assert originals[unsupported] == "unsupported_message_type"
    assert any(r == "mllp_framing_error" and b"stray" in o for o, r in originals.items())


def test_an_oversize_message_is_refused_and_kept_while_the_connection_goes_on(
    stack: Stack, hl7_port: int
) -> None:
    client = MllpClient(hl7_port)
    big = philips("BIG-1") + b"\rNTE|1||" + b"x" * 6000
    try:
        refused = client.send(big)
        after = client.send(philips("AFTER-BIG"))
    finally:
        client.close()
    assert ack_code(refused) == "CR"  # header recovered from the kept beginning
    assert b"MSA|CR|BIG-1" in refused
    assert ack_code(after) == "CA"
    letters = [d for d in dead_letters(stack, "hl7") if d.reason == "too_large"]
    assert letters
    assert letters[0].original.startswith(b"MSH|")


def test_an_idle_or_silent_peer_does_not_stall_others_and_is_closed(
    stack: Stack, hl7_port: int
) -> None:
    idle = socket.create_connection(("127.0.0.1", hl7_port), timeout=30)
    half = socket.create_connection(("127.0.0.1", hl7_port), timeout=30)
    try:
        half.sendall(b"\x0bMSH|^~\\&|half a message")  # never finished
        client = MllpClient(hl7_port)
        try:
            started = time.monotonic()
            assert ack_code(client.send(philips("WHILE-IDLE"))) == "CA"
            assert time.monotonic() - started < 10
        finally:
            client.close()
        # The listener closes both after its idle timeout (3 s here).
        assert idle.recv(10) == b""
        assert half.recv(10) == b""
    finally:
        idle.close()
        half.close()


def test_a_peer_trickling_a_frame_is_closed_at_the_frame_deadline(
    stack: Stack, hl7_port: int
) -> None:
    trickle = socket.create_connection(("127.0.0.1", hl7_port), timeout=30)
    trickle.setblocking(False)
    started = time.monotonic()
    closed_after: float | None = None
    try:
        trickle.send(b"\x0bMSH|^~\\&|")
        while time.monotonic() - started < 12:
            time.sleep(0.5)
            try:
                trickle.send(b"x")  # a byte every 0.5 s: never idle for 3 s
                if trickle.recv(10) == b"":
                    closed_after = time.monotonic() - started
                    break
            except BlockingIOError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    finally:
        trickle.close()
    assert closed_after is not None, "a trickling peer kept its connection"
    assert closed_after < 8  # the frame had 3 s to complete


def test_a_nirs_line_session_gets_ok_and_err_replies_and_dead_letters(stack: Stack) -> None:
    _proc, port = stack.start_listener("nirs")
    now = datetime.now(UTC).replace(microsecond=0)

    def at(seconds: int) -> str:
        return (now - timedelta(seconds=60 - seconds)).isoformat()

    lines = [
        f"NIRS v=1 patient=MRN9 device=INVOS-1 time={at(0)} left=64 right=66 "
        "baseline_left=70 baseline_right=71 id=1",
        "# a comment: no reply, but it counts as a line",
        f"NIRS v=1 patient=MRN9 device=INVOS-1 time={at(5)} lft=62 right=65 id=2",
        f"NIRS v=1 patient=MRN9 device=INVOS-1 time={at(10)} left=61 right=64 id=3",
        f"NIRS v=1 patient=MRN9 device=INVOS-1 time={at(10)} left=61 right=64 id=3",
    ]
    client = LineClient(port)
    try:
        client.send_lines([line.encode() for line in lines])
        replies = client.read_replies(4)
    finally:
        client.close()
    assert replies[0] == "OK 1 id=1"
    assert replies[1].startswith("ERR 3 id=2 unknown_field:")
    assert replies[2:] == ["OK 4 id=3", "OK 5 id=3"]  # the resend is acknowledged again

    samples = [NirsSample.model_validate_json(v) for v in stack.read_all("nirs")]
    assert [s.source.message_control_id for s in samples] == ["1", "3"]  # published once
    assert samples[0].value_of(Quantity.RSO2_LEFT) == 64.0
    assert samples[0].value_of(Quantity.RSO2_BASELINE_RIGHT) == 71.0
    letters = dead_letters(stack, "nirs")
    assert [letter.original.decode() for letter in letters] == [lines[2]]


def test_context_lines_reach_the_context_topic(stack: Stack) -> None:
    _proc, port = stack.start_listener("context")
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    event = {"kind": "weight", "patient_id": "MRN9", "observed_at": at, "weight_kg": 71.5}
    client = LineClient(port)
    try:
        client.send_lines([json.dumps(event).encode(), b'{"kind": "weight"}'])
        replies = client.read_replies(2)
    finally:
        client.close()
    assert replies[0] == "OK 1"
    assert replies[1].startswith("ERR 2 ")
    values = [json.loads(v) for v in stack.read_all("context")]
    assert [(v["kind"], v["weight_kg"], v["source"]["adapter"]) for v in values] == [
        ("weight", 71.5, "context")
    ]


def test_connections_over_the_limit_are_closed_and_the_others_served(stack: Stack) -> None:
    _proc, port = stack.start_listener("crrt", env={"VIGIL_INGEST_MAX_CONNECTIONS": "2"})
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    line = f"CRRT v=1 patient=MRN7 device=PRISMAFLEX-2 time={at} mode=CVVHDF blood_flow=150"
    first, second = LineClient(port), LineClient(port)
    try:
        second.send_lines([(line + " id=a").encode()])
        assert second.read_replies(1) == ["OK 1 id=a"]  # both connections are open now
        third = socket.create_connection(("127.0.0.1", port), timeout=30)
        try:
            assert third.recv(10) == b""  # closed at once: over the limit
        finally:
            third.close()
        first.send_lines([(line + " id=b").encode()])
        assert first.read_replies(1) == ["OK 1 id=b"]
    finally:
        first.close()
        second.close()
    deadline = time.monotonic() + 10
    while True:  # a freed slot is usable again
        client = LineClient(port)
        try:
            client.send_lines([(line + " id=c").encode()])
            assert client.read_replies(1) == ["OK 1 id=c"]
            break
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        finally:
            client.close()


def test_file_imports_publish_records_and_dead_letter_refused_lines(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, tmp_path, unique_prefix("import"))
    stack.create_topics()
    at = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    crrt = tmp_path / "crrt.txt"
    crrt.write_text(
        "# two records and one misspelt key\n"
        f"CRRT v=1 patient=MRN3 device=PF-1 time={at} mode=CVVHDF blood_flow=150 tmp=80 id=1\n"
        f"CRRT v=1 patient=MRN3 device=PF-1 time={at} mode=CVVHDF blod_flow=150 id=2\n"
        f"CRRT v=1 patient=MRN3 device=PF-1 time={at} prefilter_pressure=180 id=3\n"
    )
    result = stack.vigil("crrt", "import", str(crrt))
    assert result.returncode == 1, result.stderr  # a refused line is reported as a failure
    assert "published 2 records; refused 1" in result.stdout
    assert "crrt.txt:3: refused (unknown_field)" in result.stderr
    statuses = [json.loads(v) for v in stack.read_all("crrt")]
    assert [s["source"]["message_control_id"] for s in statuses] == ["1", "3"]
    (letter,) = dead_letters(stack, "crrt")
    assert letter.original.startswith(b"CRRT v=1 patient=MRN3")
    assert b"blod_flow" in letter.original

    adt = Path(__file__).resolve().parents[1] / "data" / "hl7" / "adt_a01.hl7"
    result = stack.vigil("hl7", "import", str(adt))
    assert result.returncode == 0, result.stderr
    (admission,) = [json.loads(v) for v in stack.read_all("context")]
    assert admission["kind"] == "admission"
