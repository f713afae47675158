"""Publishing shell of the replay: paces records by event time and sends them to Kafka.

Event time runs ``speed`` times faster than the wall clock from the first record on
(``speed=None``: as fast as the producer goes). Each record's ``received_at`` is restamped
with the wall clock when it is sent: the time Vigil received it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from kafka import KafkaProducer
from pydantic import BaseModel

from schemas.context import ContextEvent
from schemas.topics import TopicRegistry
from services.ingest import Outbound
from services.replay.common import event_time

log = logging.getLogger(__name__)


@dataclass
class PublishStats:
    """What a replay sent: records per topic, delivery failures, event-time span."""

    per_topic: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    wall_seconds: float = 0.0
    first_event: datetime | None = None
    last_event: datetime | None = None
    interrupted: bool = False

    @property
    def records(self) -> int:
        return sum(self.per_topic.values())

    @property
    def rate(self) -> float:
        return self.records / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def summary(self) -> str:
        topics = ", ".join(f"{t}={n}" for t, n in sorted(self.per_topic.items())) or "none"
        span = (
            f", event time {self.first_event.isoformat()} .. {self.last_event.isoformat()}"
            if self.first_event and self.last_event
            else ""
        )
        return (
            f"{self.records} records ({topics}) in {self.wall_seconds:.1f} s: "
            f"{self.rate:.0f} records/s{span}; {self.failures} not acknowledged"
        )


class Progress:
    """A throttled one-line progress report (records, records/s, event time reached)."""

    def __init__(self, stream: TextIO = sys.stderr, interval_s: float = 0.5) -> None:
        self.stream = stream
        self.interval_s = interval_s
        self._last = 0.0

    def update(
        self, records: int, elapsed_s: float, reached: datetime, *, final: bool = False
    ) -> None:
        now = time.monotonic()
        if not final and now - self._last < self.interval_s:
            return
        self._last = now
        rate = records / elapsed_s if elapsed_s > 0 else 0.0
        self.stream.write(
            f"\r{records} records, {rate:.0f}/s, event time {reached.isoformat()}"
            + ("\n" if final else "")
        )
        self.stream.flush()


def restamped(payload: BaseModel, received_at: datetime) -> BaseModel:
    """The payload with ``received_at`` set (context events carry it on their root)."""
    if isinstance(payload, ContextEvent):
        return ContextEvent(payload.root.model_copy(update={"received_at": received_at}))
    return payload.model_copy(update={"received_at": received_at})


def publish_records(
    records: Iterable[Outbound],
    producer: KafkaProducer,
    registry: TopicRegistry,
    *,
    speed: float | None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PublishStats:
    """Send every record to its registry topic, keyed by patient, paced by event time.

    Stops early when ``stop`` is set or on Ctrl-C (``interrupted``); always flushes before
    returning. A send Kafka does not acknowledge is counted in ``failures`` and logged.
    """
    stats = PublishStats()
    started = time.monotonic()
    lock = threading.Lock()

    def on_error(exc: BaseException) -> None:
        with lock:
            stats.failures += 1
        log.error("replayed record not acknowledged by Kafka: %s", exc)

    try:
        for record in records:
            if stop is not None and stop.is_set():
                stats.interrupted = True
                break
            at = event_time(record)
            if stats.first_event is None:
                stats.first_event = at
            if speed is not None:
                delay = (
                    started + (at - stats.first_event).total_seconds() / speed - time.monotonic()
                )
                if delay > 0 and stop is not None and stop.wait(delay):
                    stats.interrupted = True
                    break
                if delay > 0 and stop is None:
                    time.sleep(delay)
            payload = restamped(record.payload, wall_clock())
            future = producer.send(
                registry.name(record.topic),
                key=record.key.encode(),
                value=payload.model_dump_json().encode(),
            )
            future.add_errback(on_error)
            stats.per_topic[record.topic] += 1
            stats.last_event = at
            if progress is not None:
                progress.update(stats.records, time.monotonic() - started, at)
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        producer.flush()
        stats.wall_seconds = time.monotonic() - started
    if progress is not None and stats.last_event is not None:
        progress.update(stats.records, stats.wall_seconds, stats.last_event, final=True)
    return stats
