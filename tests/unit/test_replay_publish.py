"""The replay's publishing shell with a stand-in producer: pacing, failures, stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.codes import Quantity
from schemas.common import SourceInfo
from schemas.context import ContextEvent, Weight
from schemas.observations import VitalSigns
from schemas.topics import TopicRegistry
from services.ingest import Outbound
from services.replay.common import context, measure, observation
from services.replay.publish import publish_records

T0 = datetime(2030, 1, 1, tzinfo=UTC)
WALL = datetime(2031, 5, 5, 12, 0, tzinfo=UTC)
SOURCE = SourceInfo(adapter="replay")


class _Future:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def add_errback(self, callback: Callable[[BaseException], None]) -> None:
        if self.error is not None:
            callback(self.error)


class _Producer:
    def __init__(self, fail_every: int = 0) -> None:
        self.sent: list[tuple[str, bytes, bytes, float]] = []
        self.flushed = 0
        self.fail_every = fail_every

    def send(self, topic: str, *, key: bytes, value: bytes) -> _Future:
        self.sent.append((topic, key, value, time.monotonic()))
        failed = self.fail_every and len(self.sent) % self.fail_every == 0
        return _Future(RuntimeError("not acknowledged") if failed else None)

    def flush(self) -> None:
        self.flushed += 1


def _records(n: int, step_s: float) -> list[Outbound]:
    out: list[Outbound] = []
    for i in range(n):
        at = T0 + timedelta(seconds=i * step_s)
        hr = measure(Quantity.HEART_RATE, at, value=60.0 + i, unit="/min")
        out.append(Outbound("vitals", "p1", observation(VitalSigns, "p1", [hr], source=SOURCE)))
    weight = Weight(patient_id="p1", observed_at=T0, received_at=T0, source=SOURCE, weight_kg=70)
    out.insert(1, context(weight))
    return out


def _publish(records: list[Outbound], producer: _Producer, **kwargs: Any) -> Any:
    registry = TopicRegistry(prefix="x.")
    return publish_records(records, producer, registry, wall_clock=lambda: WALL, **kwargs)


def test_max_speed_sends_everything_to_prefixed_topics_restamped_and_flushes() -> None:
    producer = _Producer()
    stats = _publish(_records(5, 1.0), producer, speed=None)
    assert stats.per_topic == {"vitals": 5, "context": 1}
    assert (stats.failures, stats.interrupted, producer.flushed) == (0, False, 1)
    assert [s[0] for s in producer.sent[:2]] == ["x.vitals", "x.context"]
    assert {s[1] for s in producer.sent} == {b"p1"}
    vitals = VitalSigns.model_validate_json(producer.sent[0][2])
    weight = ContextEvent.model_validate_json(producer.sent[1][2]).root
    assert (vitals.received_at, weight.received_at) == (WALL, WALL)
    assert vitals.measurements[0].observed_at == T0  # event time unchanged
    assert (stats.first_event, stats.last_event) == (T0, T0 + timedelta(seconds=4))


def test_speed_paces_by_event_time() -> None:
    producer = _Producer()
    # 4 records 1 s of event time apart at 10x: the last is sent >= 0.3 s after the first
    _publish(_records(4, 1.0), producer, speed=10.0)
    vitals_times = [s[3] for s in producer.sent if s[0] == "x.vitals"]
    assert vitals_times[-1] - vitals_times[0] >= 0.29
    assert vitals_times[-1] - vitals_times[0] < 2.0


def test_unacknowledged_sends_are_counted() -> None:
    stats = _publish(_records(6, 1.0), _Producer(fail_every=3), speed=None)
    assert stats.failures == 2
    assert stats.records == 7


def test_stop_interrupts_a_paced_replay_and_still_flushes() -> None:
    producer = _Producer()
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    stats = _publish(_records(3, 3600.0), producer, speed=1.0, stop=stop)
    assert time.monotonic() - started < 5
    assert stats.interrupted
    assert stats.per_topic == {"vitals": 1, "context": 1}
    assert producer.flushed == 1
