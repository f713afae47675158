"""Kafka in and out for the display: one consumer thread feeding ``UnitState``, acks out.

On start the consumer reads back the last ``readback_hours`` of features, risk,
alerts and acknowledgements (``offsets_for_times``) and the whole context topic
(admissions place patients in beds), then follows every topic live. It reads
every partition itself (no consumer group): each display shows the whole unit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from schemas.alerts import AlertAck, AlertEvent
from schemas.context import ContextEvent
from schemas.derived import FeatureSnapshot, RiskScore
from schemas.topics import TopicRegistry
from services.display.state import UnitState
from services.kafka_io import reliable_producer

log = logging.getLogger(__name__)

FOLLOWED = ("context", "features", "risk", "alerts", "alerts.ack")


class KafkaFeed:
    """Consumes the display's topics into ``state`` (guarded by ``lock``) in a thread."""

    def __init__(
        self,
        bootstrap_servers: str,
        registry: TopicRegistry,
        state: UnitState,
        lock: threading.Lock,
        *,
        readback_hours: float = 24.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.registry = registry
        self.state = state
        self.lock = lock
        self.readback = timedelta(hours=readback_hours)
        self.clock = clock
        self.stop_event = threading.Event()
        self.caught_up = threading.Event()
        self.records = 0
        self.invalid = 0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        names = {registry.name(base): base for base in FOLLOWED}
        self._base_of = names
        self._producer_lock = threading.Lock()
        self._producer: Any = None

    # ---- consuming ----------------------------------------------------------------

    def _apply(self, base: str, value: bytes) -> None:
        state = self.state
        if base == "features":
            state.apply_features(FeatureSnapshot.model_validate_json(value))
        elif base == "alerts":
            state.apply_alert(AlertEvent.model_validate_json(value))
        elif base == "context":
            state.apply_context(ContextEvent.model_validate_json(value).root)
        elif base == "risk":
            state.apply_risk(RiskScore.model_validate_json(value))
        elif base == "alerts.ack":
            state.apply_ack(AlertAck.model_validate_json(value))

    def _consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id="vigil-display",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        partitions: list[TopicPartition] = []
        for topic in self._base_of:
            found = consumer.partitions_for_topic(topic) or set()
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        if not partitions:
            consumer.close()
            raise KafkaError(f"none of the display's topics exist: {sorted(self._base_of)}")
        consumer.assign(partitions)
        since_ms = int((self.clock() - self.readback).timestamp() * 1000)
        timed = [tp for tp in partitions if self._base_of[tp.topic] != "context"]
        offsets = consumer.offsets_for_times(dict.fromkeys(timed, since_ms))
        ends = consumer.end_offsets(partitions)
        for tp in partitions:
            if self._base_of[tp.topic] == "context":
                consumer.seek_to_beginning(tp)
                continue
            found_offset = offsets.get(tp)
            consumer.seek(tp, found_offset.offset if found_offset is not None else ends[tp])
        self._ends = {tp: end for tp, end in ends.items() if end > 0}
        return consumer

    def _run(self) -> None:
        consumer: KafkaConsumer | None = None
        while not self.stop_event.is_set():
            try:
                if consumer is None:
                    consumer = self._consumer()
                    self.last_error = None
                batches = consumer.poll(timeout_ms=100, max_records=5000)
            except KafkaError as exc:
                self.last_error = str(exc)
                log.warning("display feed: %s (retrying)", exc)
                if consumer is not None:
                    consumer.close()
                    consumer = None
                self.stop_event.wait(2.0)
                continue
            if batches:
                with self.lock:
                    for tp, records in batches.items():
                        base = self._base_of[tp.topic]
                        for record in records:
                            self.records += 1
                            try:
                                self._apply(base, record.value)
                            except (ValidationError, ValueError) as exc:
                                self.invalid += 1
                                log.warning("display: skipped a bad %s record: %s", base, exc)
            if not self.caught_up.is_set() and consumer is not None:
                self._check_caught_up(consumer)
        if consumer is not None:
            consumer.close()

    def _check_caught_up(self, consumer: KafkaConsumer) -> None:
        if all(consumer.position(tp) >= end for tp, end in self._ends.items()):
            self.caught_up.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="display-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._producer_lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None

    # ---- acknowledging ------------------------------------------------------------

    def publish_ack(self, ack: AlertAck, timeout_s: float = 10.0) -> None:
        """Write one acknowledgement to alerts.ack and wait for Kafka's ack (acks=all)."""
        with self._producer_lock:
            if self._producer is None:
                self._producer = reliable_producer(
                    self.bootstrap_servers, client_id="vigil-display-ack"
                )
            producer = self._producer
        started = time.monotonic()
        future = producer.send(
            self.registry.name("alerts.ack"),
            key=ack.patient_id.encode(),
            value=ack.model_dump_json().encode(),
        )
        future.get(timeout=max(0.1, timeout_s - (time.monotonic() - started)))
