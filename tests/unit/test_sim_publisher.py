"""The simulator's publishing shell with a fake producer: routing, counts, failures, stop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from schemas.topics import TopicRegistry
from services.sim import IcuConfig, Scenario
from services.sim_publisher import publish_simulation

START = datetime(2026, 2, 1, tzinfo=UTC)


class FakeFuture:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def add_errback(self, callback: Callable[[BaseException], None]) -> None:
        if self.fail:
            callback(RuntimeError("not acknowledged"))


class FakeProducer:
    def __init__(self, fail_topic: str | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.flushed = False
        self.fail_topic = fail_topic

    def send(self, topic: str, *, key: bytes, value: bytes) -> FakeFuture:
        self.sent.append((topic, key, value))
        return FakeFuture(topic == self.fail_topic)

    def flush(self) -> None:
        self.flushed = True


def config(duration_s: int | None = 120) -> IcuConfig:
    plan = (Scenario("hypotension", 1, 30, 60), Scenario("cerebral_desaturation", 2, 10, 60))
    return IcuConfig(beds=2, seed=3, start=START, duration_s=duration_s, scenarios=plan)


def test_records_go_to_their_prefixed_topics_keyed_by_patient_truth_first() -> None:
    producer = FakeProducer()
    registry = TopicRegistry(prefix="t1.")
    stats = publish_simulation(config(), producer, registry, speed=None)  # type: ignore[arg-type]
    assert producer.flushed
    topics = [t for t, _k, _v in producer.sent]
    assert topics[:2] == ["t1.groundtruth", "t1.groundtruth"]
    assert set(topics) == {"t1.groundtruth", "t1.context", "t1.vitals", "t1.nirs"}
    assert stats.per_topic["vitals"] == 2 * 120
    assert stats.messages == len(producer.sent)
    assert stats.simulated_seconds == 120
    assert {k for _t, k, _v in producer.sent} == {b"sim-001", b"sim-002"}
    assert "vitals=240" in stats.summary()


def test_unacknowledged_sends_are_counted() -> None:
    producer = FakeProducer(fail_topic="icu.nirs")
    stats = publish_simulation(config(), producer, TopicRegistry(), speed=None)  # type: ignore[arg-type]
    assert stats.failures == stats.per_topic["nirs"] > 0


def test_pacing_follows_event_time_and_stop_ends_an_open_run() -> None:
    stop = threading.Event()
    producer: Any = FakeProducer()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    stats = publish_simulation(config(None), producer, TopicRegistry(), speed=20, stop=stop)
    timer.cancel()
    assert 8 <= stats.simulated_seconds <= 12, "20 simulated seconds per wall second"
    assert producer.flushed
