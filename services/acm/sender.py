"""``vigil acm send``: alert events from Kafka to a remote alert manager as PCD-04 over MLLP.

One consumer group per destination (default ``vigil-acm-<host>-<port>``), so each
remote centre has its own position. Per record, in partition order:

1. not an alert event -> a dead letter with the original bytes (acknowledged by Kafka),
   then the record counts as done;
2. filtered out (``--site``/``--unit``/``--priority``) -> done;
3. otherwise the ORU^R40 is sent and the sender waits for the receiver's commit ACK
   (MSA-1 ``CA`` or ``AA`` with MSA-2 = our MSH-10). No ACK in time, a negative ACK or a
   lost connection -> the same message again after an exponential back-off with
   jitter, for as long as it takes: nothing is dropped.

The Kafka offset of a record is committed only once it is done (for a sent alert: once
the receiver has committed it), in batches every ``commit_interval_s`` and on exit; a
crash re-sends at most the records of one batch (the receiver drops duplicates by
MSH-10 = the event id). While a message waits, the :class:`DeliveryWatchdog` raises
the technical alert ``acm.delivery_failed`` on the alerts topic after ``watchdog_s``
seconds without an ACK, and ends it at the first ACK after that. Both events go on
the alerts topic and so reach the central station (and, once it answers again, the
remote centre itself).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from schemas.alerts import AlertEvent, AlertPhase, AlertPriority
from schemas.deadletter import DeadLetter
from schemas.topics import TopicRegistry
from services.acm.delivery import Backoff, DeliveryWatchdog, delivery_alert
from services.acm.oru_r40 import (
    AckReply,
    ReporterIdentity,
    build_oru_r40,
    build_watchdog,
    parse_ack,
)
from services.alerts_tail import AlertFilter
from services.ingest.mllp import MllpDecoder, MllpError, encode_frame
from services.kafka_io import reliable_producer

log = logging.getLogger(__name__)

DEAD_LETTER_SOURCE = "acm.send"
_LABEL = ("destination",)
SENT = Counter("vigil_acm_messages_sent_total", "ORU^R40 transmissions (resends too)", _LABEL)
KEEPALIVES = Counter("vigil_acm_keepalives_sent_total", "Watchdog ORU^R40 sent while idle", _LABEL)
ACKED = Counter("vigil_acm_messages_acked_total", "Messages the receiver committed", _LABEL)
RETRIES = Counter(
    "vigil_acm_retries_total", "Resends after no ACK, a negative ACK or a lost connection", _LABEL
)
NAKS = Counter("vigil_acm_negative_acks_total", "Negative ACKs (AE/AR/CE/CR)", _LABEL)
PENDING = Gauge("vigil_acm_pending_messages", "Messages sent and waiting for an ACK", _LABEL)
SINCE_ACK = Gauge(
    "vigil_acm_seconds_since_last_ack",
    "Seconds since the last commit ACK (since start before the first)",
    _LABEL,
)
ALARM = Gauge("vigil_acm_delivery_alarm_active", "1 while acm.delivery_failed is active", _LABEL)
DEAD = Counter("vigil_acm_dead_letters_total", "Alert records that were not alert events", _LABEL)
SKIPPED = Counter("vigil_acm_filtered_total", "Alert events left out by the filters", _LABEL)

_TICK_S = 0.1  # how often waits look at the watchdog, the stop flag and the consumer
_KEEP_GROUP_AFTER_S = 5.0  # a wait this long polls the (paused) consumer once a second


def default_group(host: str, port: int) -> str:
    """The consumer group of one destination.

    >>> default_group("tele.example.org", 2575)
    'vigil-acm-tele.example.org-2575'
    """
    return f"vigil-acm-{re.sub(r'[^A-Za-z0-9._-]', '_', host)}-{port}"


@dataclass(frozen=True)
class SenderConfig:
    """Where to send, how long to wait, how to retry, when to raise the delivery alarm."""

    host: str
    port: int
    ack_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    watchdog_s: float = 30.0
    watchdog_priority: AlertPriority = AlertPriority.MEDIUM
    commit_interval_s: float = 1.0
    max_frame_bytes: int = 1024 * 1024
    alert_filter: AlertFilter = field(default_factory=AlertFilter)
    site: str | None = None  # the site of the delivery alarm
    keepalive_s: float = 0.0  # idle this long -> a watchdog ORU^R40 (0: never)

    @property
    def destination(self) -> str:
        return f"{self.host}:{self.port}"


class DeliveryError(Exception):
    """This attempt failed (no ACK in time, negative ACK, connection lost); retry."""


class MllpConnection:
    """A blocking MLLP client: one frame out, frames in (framing by :mod:`mllp`)."""

    def __init__(self, host: str, port: int, *, connect_timeout_s: float, max_frame_bytes: int):
        self.sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        self.decoder = MllpDecoder(max_frame_bytes)
        self.frames: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.sock.settimeout(30.0)
        self.sock.sendall(encode_frame(payload))

    def read_frame(self, timeout_s: float) -> bytes | None:
        """The next frame, or None when none completes within ``timeout_s``."""
        if self.frames:
            return self.frames.pop(0)
        self.sock.settimeout(max(timeout_s, 0.001))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return None
        if not chunk:
            raise DeliveryError("the receiver closed the connection")
        for event in self.decoder.feed(chunk):
            if isinstance(event, MllpError):
                log.warning("reply framing error: %s", event.message)
            else:
                self.frames.append(event.payload)
        return self.frames.pop(0) if self.frames else None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class AcmSender:
    """The sender loop: consume, deliver with retries, commit, watch, dead-letter."""

    def __init__(
        self,
        config: SenderConfig,
        reporter: ReporterIdentity,
        *,
        bootstrap_servers: str,
        topics: TopicRegistry,
        group_id: str,
        from_beginning: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.reporter = reporter
        self.topics = topics
        self.clock = clock
        self.wall_clock = wall_clock
        self.backoff = backoff or Backoff(config.backoff_base_s, config.backoff_cap_s)
        self.watchdog = DeliveryWatchdog(config.watchdog_s)
        self.consumer: Any = KafkaConsumer(
            topics.alerts,
            bootstrap_servers=bootstrap_servers,
            client_id="vigil-acm",
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            max_poll_records=500,
        )
        self.producer: KafkaProducer = reliable_producer(bootstrap_servers, client_id="vigil-acm")
        self.connection: MllpConnection | None = None
        self.done: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self.committed: dict[TopicPartition, int] = {}
        self.last_commit = clock()
        self.started = clock()
        self.last_tick = self.started  # the loop's heartbeat (liveness probe)
        self.assigned = 0  # partitions of the alerts topic, as of the last tick
        self.delivered = 0
        self._stop: Callable[[], bool] = lambda: False
        self._paused = False
        self._kept = 0.0
        self._delivering = False
        self.keepalives = 0
        self._keepalive_failures = 0
        self.next_keepalive = self.started + config.keepalive_s
        dest = config.destination
        self.m_sent, self.m_acked = SENT.labels(dest), ACKED.labels(dest)
        self.m_retries, self.m_naks = RETRIES.labels(dest), NAKS.labels(dest)
        self.m_pending, self.m_since = PENDING.labels(dest), SINCE_ACK.labels(dest)
        self.m_alarm, self.m_dead = ALARM.labels(dest), DEAD.labels(dest)
        self.m_skipped = SKIPPED.labels(dest)
        self.m_keepalives = KEEPALIVES.labels(dest)

    # -- main loop -------------------------------------------------------------------

    def run(
        self, should_stop: Callable[[], bool] = lambda: False, max_messages: int | None = None
    ) -> int:
        """Deliver until ``should_stop()`` (or ``max_messages`` delivered); returns the count."""
        self._stop = should_stop
        try:
            while not should_stop():
                if max_messages is not None and self.delivered >= max_messages:
                    break
                batches = self.consumer.poll(timeout_ms=200)
                self.tick()
                if not batches and self.config.keepalive_s and self.clock() >= self.next_keepalive:
                    self.keepalive()
                for tp, records in batches.items():
                    for record in records:
                        if should_stop() or not self.handle(record):
                            return self.delivered
                        self.done[tp] = record.offset + 1
                        self.maybe_commit()
                self.maybe_commit()
            return self.delivered
        finally:
            self.close()

    def handle(self, record: Any) -> bool:
        """Deliver one record; False when stopped before it was done."""
        raw = bytes(record.value or b"")
        try:
            alert = AlertEvent.model_validate_json(raw)
        except ValidationError as exc:
            return self.dead_letter(record, raw, exc)
        if not self.config.alert_filter.matches(alert):
            self.m_skipped.inc()
            return True
        payload = build_oru_r40(alert, self.reporter, now=self.wall_clock())
        if self.deliver(payload, alert.event_id):
            self.delivered += 1
            return True
        return False

    # -- one message -----------------------------------------------------------------

    def deliver(self, payload: bytes, control_id: str) -> bool:
        """Send until the receiver commits it; False only when stopped first."""
        self._delivering = True
        try:
            return self._deliver(payload, control_id)
        finally:
            self._delivering = False

    def _deliver(self, payload: bytes, control_id: str) -> bool:
        self.watchdog.message_pending(self.clock())
        self.m_pending.set(1)
        attempt = 0
        while not self._stop():
            try:
                reply = self.attempt(payload, control_id, self.m_sent)
            except (OSError, DeliveryError) as exc:
                self.disconnect()
                problem = str(exc) or type(exc).__name__
            else:
                if reply.committed:
                    self.m_acked.inc()
                    self.watchdog.acked(self.clock())
                    self.m_pending.set(0)
                    self.next_keepalive = self.clock() + self.config.keepalive_s
                    self._keepalive_failures = 0
                    self.tick()
                    return True
                self.m_naks.inc()
                problem = f"negative ACK {reply.code}: {reply.text}"
            attempt += 1
            self.m_retries.inc()
            delay = self.backoff.delay(attempt)
            log.warning(
                "%s: message %s not committed (%s); retry %d in %.1f s",
                self.config.destination,
                control_id,
                problem,
                attempt,
                delay,
            )
            self.wait(delay)
        return False

    def keepalive(self) -> None:
        """One watchdog message (Draeger's PCD04_watchdog layout) while idle. Any ACK,
        even a negative one, shows the receiver is there; no ACK leaves the watchdog
        waiting (so an outage is signalled before the next alert) and retries later."""
        now = self.clock()
        self.watchdog.message_pending(now)
        self.keepalives += 1
        control_id = f"keepalive-{self.reporter.eui64}-{self.keepalives}"
        payload = build_watchdog(
            self.reporter,
            now=self.wall_clock(),
            control_id=control_id,
            counter=self.keepalives,
            confirm_timeout_s=self.config.ack_timeout_s,
            site=self.config.site,
        )
        try:
            self.attempt(payload, control_id, self.m_keepalives)
        except (OSError, DeliveryError) as exc:
            self.disconnect()
            self._keepalive_failures += 1
            delay = self.backoff.delay(self._keepalive_failures)
            self.next_keepalive = self.clock() + delay
            log.warning(
                "%s: keep-alive not acknowledged (%s); next in %.1f s",
                self.config.destination,
                str(exc) or type(exc).__name__,
                delay,
            )
            return
        self._keepalive_failures = 0
        self.watchdog.acked(self.clock())
        self.next_keepalive = self.clock() + self.config.keepalive_s
        self.tick()

    def attempt(self, payload: bytes, control_id: str, sent: Any) -> AckReply:
        """One transmission (counted in ``sent``) and the wait for its ACK (replies to
        other messages skipped)."""
        conn = self.connect()
        conn.send(payload)
        sent.inc()
        deadline = self.clock() + self.config.ack_timeout_s
        while not self._stop():
            left = deadline - self.clock()
            if left <= 0:
                raise DeliveryError(f"no ACK within {self.config.ack_timeout_s:g} s")
            frame = conn.read_frame(min(left, _TICK_S))
            self.tick()
            if frame is None:
                continue
            try:
                reply = parse_ack(frame)
            except ValueError as exc:
                log.warning("%s: unreadable reply skipped: %s", self.config.destination, exc)
                continue
            if reply.control_id != control_id:
                log.info("%s: stale ACK %r skipped", self.config.destination, reply.control_id)
                continue
            return reply
        raise DeliveryError("stopped")

    def connect(self) -> MllpConnection:
        if self.connection is None:
            self.connection = MllpConnection(
                self.config.host,
                self.config.port,
                connect_timeout_s=self.config.connect_timeout_s,
                max_frame_bytes=self.config.max_frame_bytes,
            )
            log.info("connected to %s", self.config.destination)
        return self.connection

    def disconnect(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` in ticks (the watchdog and the stop flag keep being looked at)."""
        until = self.clock() + seconds
        while not self._stop():
            left = until - self.clock()
            if left <= 0:
                return
            time.sleep(min(left, _TICK_S))
            self.tick()

    # -- watchdog, metrics, consumer liveness ----------------------------------------

    def tick(self) -> None:
        """Publish a due delivery alarm start or end; refresh gauges; keep the group."""
        now = self.clock()
        self.last_tick, self.assigned = now, len(self.consumer.assignment())
        dog = self.watchdog
        last = dog.last_ack if dog.last_ack is not None else self.started
        self.m_since.set(now - last)
        if dog.raise_due(now):
            waited = dog.waiting_s(now)
            at = self.wall_clock()
            event = delivery_alert(
                self.config.destination,
                AlertPhase.START,
                onset=at - timedelta(seconds=waited),
                at=at,
                raised_at=at,
                waited_s=waited,
                timeout_s=self.config.watchdog_s,
                priority=self.config.watchdog_priority,
                site=self.config.site,
            )
            if self.publish_alert(event):
                dog.mark_raised(now)
                self.alarm_event = event
                self.m_alarm.set(1)
                log.error("%s: %s", self.config.destination, event.explanation[0])
        elif dog.clear_due():
            start = self.alarm_event
            at = self.wall_clock()
            event = delivery_alert(
                self.config.destination,
                AlertPhase.END,
                onset=start.condition_since,
                at=at,
                raised_at=at,
                waited_s=0.0,
                timeout_s=self.config.watchdog_s,
                priority=self.config.watchdog_priority,
                site=self.config.site,
            )
            if self.publish_alert(event):
                dog.mark_cleared()
                self.m_alarm.set(0)
                log.warning("%s: %s", self.config.destination, event.explanation[0])
        self.keep_group(waiting=self._delivering)

    alarm_event: AlertEvent

    def live(self, stale_after_s: float = 30.0) -> bool:
        """The sender loop ticked recently (it ticks every 0.2 s, delivering or not)."""
        return self.clock() - self.last_tick <= stale_after_s

    def ready(self) -> bool:
        """Kafka reachable (producer connected) and partitions of the alerts topic assigned."""
        return self.assigned > 0 and bool(self.producer.bootstrap_connected())

    def keep_group(self, *, waiting: bool) -> None:
        """While one message waits long, poll now and then with every partition paused
        (no records come back), so the consumer stays in its group however long the
        receiver is away (kafka-python leaves the group after max_poll_interval_ms)."""
        if not waiting:
            if self._paused:
                self.consumer.resume(*self.consumer.paused())
                self._paused = False
            return
        now = self.clock()
        if self.watchdog.waiting_s(now) < _KEEP_GROUP_AFTER_S or now - self._kept < 1.0:
            return
        self._kept = now
        self.consumer.pause(*self.consumer.assignment())  # partitions assigned since, too
        self._paused = True
        for tp, records in self.consumer.poll(timeout_ms=0).items():
            # assigned between pause and poll: not ours to skip; read them again later
            self.consumer.seek(tp, records[0].offset)

    def publish_alert(self, event: AlertEvent) -> bool:
        """Write a delivery alarm event to the alerts topic; False when Kafka refused it."""
        try:
            self.producer.send(
                self.topics.alerts,
                key=event.patient_id.encode(),
                value=event.model_dump_json().encode(),
            ).get(timeout=15)
        except KafkaError as exc:
            log.error("delivery alarm not published (will retry): %s", exc)
            return False
        return True

    # -- dead letters, commits -------------------------------------------------------

    def dead_letter(self, record: Any, raw: bytes, error: ValidationError) -> bool:
        """Write a dead letter for a record that is not an alert event (retried until Kafka
        takes it); False when stopped first."""
        first = error.errors()[0] if error.errors() else {"msg": str(error)}
        where = ".".join(str(p) for p in first.get("loc", ())) or "record"
        letter = DeadLetter.of(
            raw,
            source=DEAD_LETTER_SOURCE,
            reason="invalid_alert",
            detail=f"not an alert event: {where}: {first.get('msg', '')}",
            original_topic=record.topic,
            original_partition=record.partition,
            original_offset=record.offset,
            original_key=None if record.key is None else bytes(record.key).decode("latin-1"),
            received_at=self.wall_clock(),
        )
        attempt = 0
        while not self._stop():
            try:
                self.producer.send(
                    self.topics.deadletter,
                    key=DEAD_LETTER_SOURCE.encode(),
                    value=letter.model_dump_json().encode(),
                ).get(timeout=15)
            except KafkaError as exc:
                attempt += 1
                log.error("dead letter not saved (retry %d): %s", attempt, exc)
                self.wait(self.backoff.delay(attempt))
                continue
            self.m_dead.inc()
            log.error(
                "record %s/%d@%d is not an alert event: dead-lettered (%s)",
                record.topic,
                record.partition,
                record.offset,
                letter.detail,
            )
            return True
        return False

    def maybe_commit(self, force: bool = False) -> None:
        if not force and self.clock() - self.last_commit < self.config.commit_interval_s:
            return
        self.last_commit = self.clock()
        owned = self.consumer.assignment()
        for tp in [tp for tp in self.done if tp not in owned]:  # revoked: another member's now
            del self.done[tp]
            self.committed.pop(tp, None)
        todo = {tp: o for tp, o in self.done.items() if self.committed.get(tp) != o}
        if not todo:
            return
        try:
            self.consumer.commit({tp: OffsetAndMetadata(o, None, -1) for tp, o in todo.items()})
        except KafkaError as exc:  # e.g. a rebalance: the records are re-sent, never lost
            log.warning("offset commit failed (records may be re-sent): %s", exc)
            return
        self.committed.update(todo)

    def close(self) -> None:
        with contextlib.suppress(KafkaError):
            self.keep_group(waiting=False)
        self.maybe_commit(force=True)
        self.disconnect()
        with contextlib.suppress(KafkaError):
            self.consumer.close()
        with contextlib.suppress(KafkaError):
            self.producer.flush(timeout=10)
            self.producer.close(timeout=10)
        self.m_pending.set(0)
