"""Publishing shell of the simulator: paces simulated seconds against the wall clock."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from kafka import KafkaProducer

from services.simulator import SimulationConfig, simulate, wall_clock

log = logging.getLogger(__name__)


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
    messages: int = 0
    simulated_seconds: int = 0
    wall_seconds: float = 0.0
    failures: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.wall_seconds if self.wall_seconds > 0 else 0.0


def publish_simulation(
    config: SimulationConfig,
    producer: KafkaProducer,
    topic: str,
    *,
    speed: float | None,
    stop: threading.Event | None = None,
) -> PublishStats:
    """Publish the simulation to ``topic``; event time runs ``speed`` x the wall clock.

    Returns when the configured duration is done (after flushing) or ``stop`` is set.
    A send that Kafka does not acknowledge is counted in ``failures`` and logged.
    """
    stats = PublishStats()
    started = time.monotonic()

    def on_error(exc: BaseException) -> None:
        stats.failures += 1
        log.error("vitals sample not acknowledged by Kafka: %s", exc)

    for second, batch in simulate(config):
        if stop is not None and stop.is_set():
            break
        if speed is not None:
            delay = started + second / speed - time.monotonic()
            if delay > 0 and stop is not None:
                if stop.wait(delay):
                    break
            elif delay > 0:
                time.sleep(delay)
        received_at = wall_clock()
        for sample in batch:
            sample = sample.model_copy(update={"received_at": received_at})
            future = producer.send(
                topic,
                key=sample.patient_id.encode(),
                value=sample.model_dump_json().encode(),
            )
            future.add_errback(on_error)
            stats.messages += 1
        stats.simulated_seconds = second + 1
    producer.flush()
    stats.wall_seconds = time.monotonic() - started
    return stats
