"""Publishing shell of the simulator: routes records to their topics, paced by event time."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from kafka import KafkaProducer

from schemas.topics import TopicRegistry
from services.sim.engine import IcuConfig, simulate_icu, wall_clock

log = logging.getLogger(__name__)

SIM_TOPICS = ("groundtruth", "context", "vitals", "nirs", "crrt", "labs")
"""Base names of every topic the simulator writes (checked before it starts)."""


def parse_speed(text: str) -> float | None:
    """``max`` -> None (as fast as possible), else a positive factor.

    >>> parse_speed("max") is None, parse_speed("60")
    (True, 60.0)
    """
    if text.strip().lower() == "max":
        return None
    speed = float(text)
    if not speed > 0:
        raise ValueError("speed must be positive or 'max'")
    return speed


@dataclass
class PublishStats:
    per_topic: Counter[str] = field(default_factory=Counter)
    simulated_seconds: int = 0
    wall_seconds: float = 0.0
    failures: int = 0

    @property
    def messages(self) -> int:
        return sum(self.per_topic.values())

    @property
    def rate(self) -> float:
        return self.messages / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def summary(self) -> str:
        """Two lines: totals and records per topic.

        >>> s = PublishStats(Counter(vitals=6, labs=1), simulated_seconds=3, wall_seconds=0.5)
        >>> print(s.summary())
        published 7 records (3 s of event time) in 0.5 s: 14 records/s, 0 failed
        per topic: labs=1 vitals=6
        """
        topics = " ".join(f"{t}={n}" for t, n in sorted(self.per_topic.items()))
        return (
            f"published {self.messages} records ({self.simulated_seconds} s of event time) in "
            f"{self.wall_seconds:.1f} s: {self.rate:.0f} records/s, {self.failures} failed\n"
            f"per topic: {topics}"
        )


def publish_simulation(
    config: IcuConfig,
    producer: KafkaProducer,
    registry: TopicRegistry,
    *,
    speed: float | None,
    stop: threading.Event | None = None,
) -> PublishStats:
    """Publish the simulation; event time runs ``speed`` x the wall clock (None: no pacing).

    Each record goes to ``registry.name(record.topic)`` keyed by patient id. Second n is
    generated (and stamped ``received_at``) only once its wall-clock time has come.
    Returns when the configured duration is done (after flushing) or ``stop`` is set.
    A send that Kafka does not acknowledge is counted in ``failures`` and logged.
    """
    stats = PublishStats()
    names = {base: registry.name(base) for base in SIM_TOPICS}
    started = time.monotonic()

    def on_error(exc: BaseException) -> None:
        stats.failures += 1
        log.error("simulated record not acknowledged by Kafka: %s", exc)

    seconds = simulate_icu(config, wall_clock)
    next_second = 0
    while not (stop is not None and stop.is_set()):
        if speed is not None:
            delay = started + next_second / speed - time.monotonic()
            if delay > 0 and stop is not None and stop.wait(delay):
                break
            if delay > 0 and stop is None:
                time.sleep(delay)
        item = next(seconds, None)
        if item is None:
            break
        second, records = item
        for record in records:
            future = producer.send(
                names[record.topic], key=record.key.encode(), value=record.value()
            )
            future.add_errback(on_error)
            stats.per_topic[record.topic] += 1
        stats.simulated_seconds = next_second = second + 1
    producer.flush()
    stats.wall_seconds = time.monotonic() - started
    return stats


def run_simulation(
    config: IcuConfig,
    bootstrap_servers: str,
    registry: TopicRegistry,
    *,
    speed: float | None,
    stop: threading.Event | None = None,
) -> PublishStats:
    """Check every topic exists as the registry says, then publish with a reliable producer.

    Raises :class:`services.kafka_io.TopicLayoutError` before sending anything otherwise.
    """
    from services.kafka_io import check_topics, reliable_producer

    check_topics(bootstrap_servers, registry, SIM_TOPICS)
    producer = reliable_producer(bootstrap_servers, client_id="vigil-simulator")
    try:
        return publish_simulation(config, producer, registry, speed=speed, stop=stop)
    finally:
        producer.close()
