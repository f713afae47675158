"""Publishing shell for recordings (``vigil replay FILE``): order, pace, rewrite, send.

Records go out in event-time order with each recorded partition's order kept
(:func:`services.recording.replay_order`), to the same base topic in the target prefix,
keyed as recorded (same key -> same partition, so per-patient order holds). Event time
runs ``speed`` times faster than the wall clock. Values are sent byte for byte, except:

- ``received_at`` (the adapter's wall-clock receive time) is restamped with the send time
  unless ``keep_received_at``, as a live adapter would stamp it, so alarm latency means
  the same as live;
- with ``shift_to_now`` every timestamp in the payload moves by one offset, chosen so the
  first replayed record's event time is the replay's start: a live display sees "now".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import ValidationError

from schemas.topics import TopicRegistry
from services.recording import (
    OrderStats,
    Pacer,
    RecordedRecord,
    from_us,
    payload_model,
    replay_order,
    rewrite_value,
)

log = logging.getLogger(__name__)


class ReplayError(RuntimeError):
    """A record cannot be replayed as asked (e.g. its value cannot be time-shifted)."""


class Producer(Protocol):
    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> object: ...

    def flush(self) -> None: ...


class ProgressSink(Protocol):
    def update(self, records: int, reached: datetime) -> None: ...


@dataclass
class RecordingReplayStats:
    """What a recording replay sent."""

    per_topic: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    unchanged: int = 0  # values sent as recorded (not valid payloads, or nothing to rewrite)
    wall_seconds: float = 0.0
    first_event: datetime | None = None
    last_event: datetime | None = None
    shift: timedelta | None = None
    interrupted: bool = False
    order: OrderStats = field(default_factory=OrderStats)

    @property
    def records(self) -> int:
        return sum(self.per_topic.values())

    @property
    def rate(self) -> float:
        return self.records / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def summary(self) -> str:
        topics = ", ".join(f"{t}={n}" for t, n in sorted(self.per_topic.items())) or "none"
        lines = [
            f"{self.records} records ({topics}) in {self.wall_seconds:.1f} s: "
            f"{self.rate:.0f} records/s; {self.failures} not acknowledged"
        ]
        if self.first_event and self.last_event:
            lines.append(
                f"event time {self.first_event.isoformat()} .. {self.last_event.isoformat()}"
                f" ({self.last_event - self.first_event}"
                + (
                    f", {self.records / (self.last_event - self.first_event).total_seconds():.1f}"
                    " records per event-time second)"
                    if self.last_event > self.first_event
                    else ")"
                )
            )
        if self.shift is not None:
            lines.append(f"timestamps shifted by {self.shift} (recorded time + shift = sent)")
        if self.unchanged:
            lines.append(f"{self.unchanged} values sent as recorded (not valid payloads)")
        if self.order.beyond_window:
            lines.append(
                f"{self.order.beyond_window} records sent later than their event time's place"
                " (reorder window too small)"
            )
        return "\n".join(lines)


def _keyed(
    records: Iterable[RecordedRecord], only: frozenset[str] | None
) -> Iterator[RecordedRecord]:
    for record in records:
        if only is None or (record.key is not None and record.key.decode(errors="replace") in only):
            yield record


def publish_recording(
    records: Iterable[RecordedRecord],
    producer: Producer,
    registry: TopicRegistry,
    *,
    speed: float | None,
    shift_to_now: bool = False,
    keep_received_at: bool = False,
    only: frozenset[str] | None = None,
    window: int = 100_000,
    stop: threading.Event | None = None,
    progress: ProgressSink | None = None,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    partitions_for: Callable[[str], int] | None = None,
) -> RecordingReplayStats:
    """Send the recorded records (see the module docstring); always flushes before return.

    A value that is not a valid payload of its topic is sent as recorded (counted in
    ``unchanged``) unless ``shift_to_now``, where it raises :class:`ReplayError` naming the
    record: a payload whose times cannot be shifted would mislead a live display.
    """
    stats = RecordingReplayStats()
    lock = threading.Lock()
    interrupt = stop or threading.Event()
    pacer = Pacer(speed, sleep=interrupt.wait)
    started = time.monotonic()

    def on_error(exc: BaseException) -> None:
        with lock:
            stats.failures += 1
        log.error("replayed record not acknowledged by Kafka: %s", exc)

    try:
        for record in replay_order(_keyed(records, only), window, stats.order):
            if interrupt.is_set():
                stats.interrupted = True
                break
            at_us = record.sort_time_us
            if pacer.wait_until(at_us):
                stats.interrupted = True
                break
            now = wall_clock()
            if shift_to_now and stats.shift is None:
                stats.shift = now - from_us(at_us)
            value = _rewritten(record, stats, now, shift_to_now, keep_received_at)
            partition = None
            if record.key is None:  # no key to hash: keep the recorded partition
                count = partitions_for(registry.name(record.topic)) if partitions_for else 1
                partition = record.partition % max(count, 1)
            future = producer.send(
                registry.name(record.topic),
                value=value,
                key=record.key,
                headers=list(record.headers) or None,
                partition=partition,
            )
            add_errback = getattr(future, "add_errback", None)
            if add_errback is not None:
                add_errback(on_error)
            stats.per_topic[record.topic] += 1
            event = from_us(at_us)
            stats.first_event = stats.first_event or event
            stats.last_event = max(stats.last_event or event, event)
            if progress is not None:
                progress.update(stats.records, event)
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        producer.flush()
        stats.wall_seconds = time.monotonic() - started
    return stats


def _rewritten(
    record: RecordedRecord,
    stats: RecordingReplayStats,
    now: datetime,
    shift_to_now: bool,
    keep_received_at: bool,
) -> bytes | None:
    if record.value is None or (keep_received_at and not shift_to_now):
        return record.value
    if payload_model(record.topic) is None:
        if shift_to_now:
            raise ReplayError(
                f"{record.topic}[{record.partition}] offset {record.offset}: topic has no"
                " schema, its timestamps cannot be shifted"
            )
        stats.unchanged += 1
        return record.value
    try:
        return rewrite_value(
            record.topic,
            record.value,
            shift=stats.shift if shift_to_now else None,
            received_at=None if keep_received_at else now,
        )
    except ValueError as exc:  # pydantic's ValidationError and orjson's errors included
        if shift_to_now:
            detail = exc.errors()[0].get("msg") if isinstance(exc, ValidationError) else exc
            raise ReplayError(
                f"{record.topic}[{record.partition}] offset {record.offset}: not a valid"
                f" {record.topic} payload, cannot shift its timestamps: {detail}"
            ) from exc
        stats.unchanged += 1
        return record.value
