"""Recording format, time shift, replay order and pacing, without Kafka."""

from __future__ import annotations

import gzip
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from schemas.context import ContextEvent
from schemas.observations import VitalSigns
from schemas.topics import TopicRegistry
from services.recording import (
    Pacer,
    RecordedRecord,
    Recording,
    RecordingError,
    RecordingHeader,
    RecordingWriter,
    event_time_of,
    from_us,
    is_recording,
    payload_event_time,
    payload_model,
    replay_order,
    rewrite_value,
    scan,
    to_us,
)
from services.replay.recorded import ReplayError, publish_recording
from services.sim.engine import IcuConfig, simulate_icu

START = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)


def simulated(seconds: int = 20, beds: int = 2) -> list[RecordedRecord]:
    """Realistic records: a small simulated ICU, as a recorder would have consumed them."""
    config = IcuConfig(beds=beds, seed=4, start=START, duration_s=seconds)
    out: list[RecordedRecord] = []
    offsets: dict[tuple[str, int], int] = {}
    for _second, records in simulate_icu(config, clock=lambda: START + timedelta(hours=1)):
        for record in records:
            partition = int(record.key[-1]) % 2
            offset = offsets.get((record.topic, partition), 0)
            offsets[(record.topic, partition)] = offset + 1
            value = record.value()
            out.append(
                RecordedRecord(
                    topic=record.topic,
                    partition=partition,
                    offset=offset,
                    key=record.key.encode(),
                    value=value,
                    timestamp_ms=1_800_000_000_000 + offset,
                    event_time_us=event_time_of(record.topic, value),
                )
            )
    return [r for r in out if r.topic != "groundtruth"]


def header() -> RecordingHeader:
    return RecordingHeader(
        topics=("vitals", "nirs", "context"),
        partitions={"vitals": 2, "nirs": 2, "context": 2},
        source_prefix="icu.",
        started_at=START,
    )


def write(path: Path, records: list[RecordedRecord]) -> None:
    with RecordingWriter(path, header()) as writer:
        for record in records:
            writer.write(record)


def test_round_trip_keeps_bytes_headers_and_timestamps(tmp_path: Path) -> None:
    records = [
        *simulated(5),
        RecordedRecord(
            "vitals",
            1,
            99,
            b"\xff\x00bin",
            b"\x80not utf8",
            5,
            1,
            None,
            (("trace", b"\x01\x02"), ("origin", b"bedside")),
        ),
        RecordedRecord("context", 0, 100, None, None, 6),  # tombstone, no key
    ]
    path = tmp_path / "r.vrec.gz"
    write(path, records)
    assert is_recording(path)
    with Recording(path) as rec:
        assert rec.header.topics == ("vitals", "nirs", "context")
        assert rec.header.source_prefix == "icu."
        back = list(rec)
        assert rec.end is not None
        assert rec.end["records"] == len(records)
        assert rec.end["stopped_by"] == "end"
        assert rec.cut_short is None
    assert back == records
    count, end = scan(path)  # the progress bar's length, without parsing records
    assert count == len(records)
    assert end is not None
    assert end["per_topic"]["context"] == sum(1 for r in records if r.topic == "context")
    vitals = [r for r in back if r.topic == "vitals" and r.event_time_us is not None]
    assert from_us(vitals[0].event_time_us or 0) >= START


def test_event_time_is_the_payloads_observation_time() -> None:
    record = next(r for r in simulated(3) if r.topic == "vitals")
    payload = VitalSigns.model_validate_json(record.value or b"")
    assert record.event_time_us == to_us(payload.observed_at)
    assert event_time_of("vitals", b'{"not": "vitals"}') is None
    for r in simulated(10):  # the fast JSON read agrees with the validated payload's time
        at = payload_event_time(payload_model(r.topic).model_validate_json(r.value or b""))
        assert r.event_time_us == (to_us(at) if at is not None else None)
    assert event_time_of("no-such-topic", record.value) is None


def lines_file(path: Path, lines: list[bytes]) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(header().encode())
        for line in lines:
            handle.write(line + b"\n")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"this is not json", "line 3: not JSON"),
        (
            b'{"topic":"vitals","partition":0,"offset":1,"timestamp_ms":1,"timestamp_type":0,'
            b'"key":"p","value_b64":"***"}',
            "line 3: value_b64 is not base64",
        ),
        (
            b'{"topic":"vitals","partition":"zero","offset":1,"timestamp_ms":1,'
            b'"timestamp_type":0,"key":"p","value":"v"}',
            "line 3: 'partition' must be an integer",
        ),
        (
            b'{"topic":"vitals","partition":0,"offset":1,"timestamp_ms":1,"timestamp_type":0,'
            b'"value":"v"}',
            "line 3: no 'key' field",
        ),
    ],
)
def test_a_corrupt_record_is_an_error_naming_its_line(
    tmp_path: Path, bad: bytes, message: str
) -> None:
    good = RecordedRecord("vitals", 0, 0, b"p", b"{}", 1)
    path = tmp_path / "bad.vrec.gz"
    from services.recording import encode_record

    lines_file(path, [encode_record(good).rstrip(b"\n"), bad])
    with Recording(path) as rec:
        it = iter(rec)
        assert next(it) == good
        with pytest.raises(RecordingError, match=message):
            next(it)


def test_not_a_recording(tmp_path: Path) -> None:
    plain = tmp_path / "numerics.csv"
    plain.write_text("minute,hr\n")
    other = tmp_path / "other.gz"
    with gzip.open(other, "wb") as handle:
        handle.write(b'{"hello": 1}\n')
    assert not is_recording(plain)
    assert not is_recording(other)
    with pytest.raises(RecordingError, match="line 1: not a vigil-recording header"):
        Recording(other)


def test_a_killed_recorder_leaves_its_flushed_records_readable(tmp_path: Path) -> None:
    records = simulated(10)
    path = tmp_path / "killed.vrec.gz"
    writer = RecordingWriter(path, header(), flush_s=0.0)  # flush after every record
    for record in records:
        writer.write(record)
    data = path.read_bytes()  # as a SIGKILL would leave it: no end line, no gzip trailer
    writer.close("end")
    cut = tmp_path / "cut.vrec.gz"
    cut.write_bytes(data)
    with Recording(cut) as rec:
        back = list(rec)
        assert rec.end is None
        assert rec.cut_short is not None
    assert back == records


def test_shift_moves_every_timestamp_and_restamps_received_at() -> None:
    record = next(r for r in simulated(3) if r.topic == "vitals")
    before = VitalSigns.model_validate_json(record.value or b"")
    now = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
    shift = timedelta(days=300, seconds=17)
    after = VitalSigns.model_validate_json(
        rewrite_value("vitals", record.value or b"", shift=shift, received_at=now)
    )
    assert after.received_at == now
    restamped = rewrite_value("vitals", record.value or b"", received_at=now)  # JSON edit only
    assert VitalSigns.model_validate_json(restamped) == before.model_copy(
        update={"received_at": now}
    )
    assert [m.observed_at - shift for m in after.measurements] == [
        m.observed_at for m in before.measurements
    ]
    assert [m.value for m in after.measurements] == [m.value for m in before.measurements]
    context = next(r for r in simulated(3) if r.topic == "context")
    moved = ContextEvent.model_validate_json(
        rewrite_value("context", context.value or b"", shift=shift)
    )
    original = ContextEvent.model_validate_json(context.value or b"")
    assert moved.root.observed_at == original.root.observed_at + shift
    assert moved.root.received_at == original.root.received_at + shift
    with pytest.raises(ValueError, match="validation error"):
        rewrite_value("vitals", b'{"patient_id": "p1"}', shift=shift)


def test_replay_order_is_event_time_and_keeps_each_partitions_order() -> None:
    def rec(p: int, o: int, t_s: float) -> RecordedRecord:
        return RecordedRecord("vitals", p, o, b"k%d" % p, b"v", 0, event_time_us=int(t_s * 1e6))

    # partition 0 was consumed first in one chunk, then partition 1; offset 2 is a late sample
    file_order = [
        rec(0, 0, 1),
        rec(0, 1, 3),
        rec(0, 2, 2),
        rec(0, 3, 5),
        rec(1, 0, 0),
        rec(1, 1, 2.5),
        rec(1, 2, 4),
    ]
    sent = [(r.partition, r.offset) for r in replay_order(file_order, window=100)]
    assert sent == [(1, 0), (0, 0), (1, 1), (0, 1), (0, 2), (1, 2), (0, 3)]
    for window in (1, 2, 3):  # too small a window: order across partitions suffers, never within
        sent = [(r.partition, r.offset) for r in replay_order(file_order, window=window)]
        for p in (0, 1):
            offsets = [o for q, o in sent if q == p]
            assert offsets == sorted(offsets)
        assert len(sent) == len(file_order)


def test_pacing_schedule_with_an_injected_clock() -> None:
    now = [50.0]
    slept: list[float] = []

    def sleep(seconds: float) -> bool:
        slept.append(round(seconds, 6))
        now[0] += seconds
        return False

    pacer = Pacer(10.0, clock=lambda: now[0], sleep=sleep)
    for event_s in (0, 10, 10, 25, 24):
        now[0] += 0.1  # sending takes 0.1 s of wall time
        assert not pacer.wait_until(int(event_s * 1e6))
    # due at 50.1 (anchor), 51.1, 51.1, 52.6, 52.6 (late sample: no earlier than 25 s)
    assert slept == [0.9, 1.3]
    assert Pacer(None, sleep=sleep).wait_until(123) is False
    stop = threading.Event()
    stop.set()
    interrupted = Pacer(1.0, sleep=stop.wait)
    interrupted.wait_until(0)
    assert interrupted.wait_until(5_000_000) is True


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self.flushed = 0

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        self.sent.append((topic, key, value, partition))

    def flush(self) -> None:
        self.flushed += 1


def test_publish_shifts_to_now_keeps_keys_and_counts_foreign_values() -> None:
    records = simulated(8)
    foreign = RecordedRecord("vitals", 0, 999, b"p-x", b"not a payload", 1, event_time_us=None)
    producer = FakeProducer()
    now = datetime(2027, 5, 5, 5, 5, tzinfo=UTC)
    stats = publish_recording(
        records,
        producer,
        TopicRegistry(prefix="replay."),
        speed=None,
        shift_to_now=True,
        wall_clock=lambda: now,
    )
    assert stats.records == len(records)
    assert producer.flushed == 1
    first = min(r.event_time_us or 0 for r in records)
    assert stats.shift == now - from_us(first)
    assert {t for t, *_ in producer.sent} == {f"replay.{r.topic}" for r in records}
    keys = sorted(k for _t, k, _v, _p in producer.sent if k is not None)
    assert keys == sorted(r.key for r in records if r.key is not None)
    vitals = [
        VitalSigns.model_validate_json(v or b"")
        for t, _k, v, _p in producer.sent
        if t == "replay.vitals"
    ]
    assert min(v.observed_at for v in vitals) == now
    assert all(v.received_at == now for v in vitals)
    unchanged = publish_recording(
        [foreign], FakeProducer(), TopicRegistry(), speed=None, wall_clock=lambda: now
    )
    assert unchanged.unchanged == 1
    with pytest.raises(ReplayError, match=r"vitals\[0\] offset 999: not a valid vitals payload"):
        publish_recording([foreign], FakeProducer(), TopicRegistry(), speed=None, shift_to_now=True)


def test_recording_lines_are_json_with_base_topic_names(tmp_path: Path) -> None:
    path = tmp_path / "r.vrec.gz"
    write(path, simulated(2))
    with gzip.open(path, "rb") as handle:
        lines = handle.read().splitlines()
    assert orjson.loads(lines[0])["format"] == "vigil-recording"
    assert {orjson.loads(line)["topic"] for line in lines[1:-1]} <= {
        "vitals",
        "nirs",
        "context",
        "crrt",
        "labs",
    }
    assert orjson.loads(lines[-1])["end"] is True


def test_replay_cli_recognises_a_recording_and_dry_runs_it(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from services.cli_replay import replay

    records = simulated(5)
    path = tmp_path / "r.vrec.gz"
    write(path, records)
    runner = CliRunner()
    result = runner.invoke(replay, [str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(records)
    times = [event_time_of(x["topic"], orjson.dumps(x["value"])) for x in lines]
    assert times == sorted(times)  # event-time order
    only = runner.invoke(replay, [str(path), "--dry-run", "--patient", lines[0]["key"]])
    assert {orjson.loads(x)["key"] for x in only.stdout.splitlines()} == {lines[0]["key"]}
    refused = runner.invoke(replay, [str(path), "--start", "now"])
    assert refused.exit_code == 2
    assert "--start applies to datasets" in refused.output
    broken = tmp_path / "broken.vrec.gz"
    lines_file(broken, [b'{"topic": "vitals"}'])
    failed = runner.invoke(replay, [str(broken), "--dry-run"])
    assert failed.exit_code == 1
    assert "broken.vrec.gz: line 2: 'partition' must be an integer" in failed.output
