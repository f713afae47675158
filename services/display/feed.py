"""Kafka in and out for the display: one consumer thread feeding ``UnitState``, acks out.

On start the consumer reads back the last ``readback_hours`` of features, risk,
alerts and acknowledgements (``offsets_for_times``) and the whole context topic
(admissions place patients in beds), then follows every topic live. It reads
every partition itself (no consumer group): each display shows the whole unit.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from schemas.alerts import AlertAck, AlertEvent
from schemas.context import ContextEvent
from schemas.derived import FeatureSnapshot, RiskScore
from schemas.topics import TopicRegistry
from services.display.state import TREND_SERIES, UnitState
from services.kafka_io import reliable_producer

log = logging.getLogger(__name__)

FOLLOWED = ("context", "features", "risk", "alerts", "alerts.ack")

_HEAD = re.compile(rb'"patient_id":"([^"]+)","computed_at":"([^"]+)"')
_TREND_VALUE = re.compile(
    rb'"(' + b"|".join(re.escape(n.encode()) for n, _l, _u in TREND_SERIES) + rb')":\{"value":'
    rb"(null|-?[0-9][0-9.eE+-]*)"
)


def trend_values(raw: bytes) -> dict[str, float | None] | None:
    """The trend features of a serialised snapshot, without decoding all of it.

    None when the bytes do not look like ``FeatureSnapshot.model_dump_json()`` output
    (the caller then decodes the whole record).

    >>> trend_values(b'{"features":{"map_mmhg":{"value":61.5,"unit":"mm[Hg]"},'
    ...              b'"spo2_pct":{"value":null,"unit":"%"}}}')
    {'map_mmhg': 61.5, 'spo2_pct': None}
    """
    found = {
        m.group(1).decode(): None if m.group(2) == b"null" else float(m.group(2))
        for m in _TREND_VALUE.finditer(raw)
    }
    return found or None


@dataclass
class _Pending:
    """The newest read-back snapshot of a patient's current minute (not decoded yet)."""

    minute: int
    at: datetime
    raw: bytes


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
        self._pending: dict[str, _Pending] = {}
        self._producer_lock = threading.Lock()
        self._producer: Any = None

    # ---- consuming ----------------------------------------------------------------

    def _read_back_features(self, value: bytes) -> bool:
        """While catching up, decode one snapshot per patient-minute, trends only.

        A 24-h read-back of 200 beds is up to 1.7 million snapshots of ~6 KB; decoding
        each (~0.4 ms) would take minutes. Only the newest of each minute feeds the
        trend (by a targeted scan), and only the newest per patient is decoded in full
        (at catch-up). Returns False when the record must be decoded normally.
        """
        head = _HEAD.search(value, 0, 300)
        if head is None:
            return False
        patient_id = head.group(1).decode()
        at = datetime.fromisoformat(head.group(2).decode().replace("Z", "+00:00"))
        minute = int(at.timestamp() // 60)
        pending = self._pending.get(patient_id)
        if pending is not None and pending.minute != minute:
            self._flush_trend(patient_id, pending)
        if pending is None or pending.minute != minute or at >= pending.at:
            self._pending[patient_id] = _Pending(minute, at, value)
        return True

    def _flush_trend(self, patient_id: str, pending: _Pending) -> None:
        values = trend_values(pending.raw)
        if values is None:
            self.state.apply_features(FeatureSnapshot.model_validate_json(pending.raw))
        else:
            self.state.record_trend(patient_id, pending.at, values)

    def _finish_read_back(self) -> None:
        """Caught up: the newest snapshot of every patient is decoded for its tile."""
        for pending in self._pending.values():
            try:
                self.state.apply_features(FeatureSnapshot.model_validate_json(pending.raw))
            except ValidationError as exc:
                self.invalid += 1
                log.warning("display: skipped a bad features record: %s", exc)
        self._pending.clear()

    def _apply(self, base: str, value: bytes) -> None:
        state = self.state
        if base == "features" and not self.caught_up.is_set() and self._read_back_features(value):
            return
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
            with self.lock:
                self._finish_read_back()
            self.caught_up.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="display-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=3)  # daemon: a consumer stuck connecting may stay
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
