"""The PCD-04 sender for real: a real broker, real sockets, an in-test MLLP alert manager
that commits each message (CA), then stops acknowledging, then goes away, then returns.

What the remote centre is sent matches the alerts topic: every alert event, in order per
patient, none dropped however long the receiver is away; Kafka offsets are committed
only behind the receiver's commit ACKs; the delivery watchdog raises the technical
alert ``acm.delivery_failed`` on the alerts topic and ends it when deliveries resume.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import REGISTRY

from schemas.alerts import AlertEvent
from schemas.deadletter import DeadLetter
from services.acm.delivery import DELIVERY_RULE_ID, Backoff
from services.acm.oru_r40 import ReporterIdentity
from services.acm.sender import AcmSender, SenderConfig
from services.alerts_tail import AlertFilter
from services.cli_acm import acm_group
from services.cli_alerts import alerts_group
from services.ingest.hl7 import build_ack
from services.ingest.hl7_syntax import decode_message
from services.ingest.mllp import MllpDecoder, encode_frame
from tests.support.stack import Stack, unique_prefix

T0 = datetime(2026, 5, 1, 14, 0, tzinfo=UTC)
REPORTER = ReporterIdentity(eui64="00A0B1C2D3E4F506")


class AlertManager:
    """A stand-in remote alarm manager: an MLLP listener that commits (CA) every message,
    or reads and stays silent (``acking = False``); :meth:`go_down` closes it and every
    connection, :meth:`come_back` listens again on the same port."""

    def __init__(self) -> None:
        self.acking = True
        self.frames: list[bytes] = []
        self.arrivals: list[float] = []  # time.monotonic() of each frame
        self.lock = threading.Lock()
        self.port = 0
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._server: socket.socket | None = None
        self._down = threading.Event()
        self.come_back()

    def come_back(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(8)
        server.settimeout(0.05)
        self.port = server.getsockname()[1]
        self._server = server
        self._down.clear()
        self._spawn(self._accept, server)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, server: socket.socket) -> None:
        while not self._down.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        decoder = MllpDecoder(1 << 20)
        conn.settimeout(0.05)
        with contextlib.suppress(OSError):
            while not self._down.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                for event in decoder.feed(chunk):
                    payload = getattr(event, "payload", None)
                    assert payload is not None, event
                    with self.lock:
                        self.frames.append(payload)
                        self.arrivals.append(time.monotonic())
                    if self.acking:
                        ack = build_ack(
                            "CA",
                            header=None,
                            raw=payload,
                            now=datetime.now(UTC),
                            control_id=uuid.uuid4().hex[:20],
                        )
                        conn.sendall(encode_frame(ack))

    def go_down(self) -> None:
        self._down.set()
        if self._server is not None:
            self._server.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._conns.clear()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def control_ids(self) -> list[str]:
        """MSH-10 of every message received, resends included, in arrival order."""
        with self.lock:
            frames = list(self.frames)
        return [decode_message(f).text(decode_message(f).segments[0], 10) for f in frames]


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Stack:
    stack = Stack(kafka_bootstrap, tmp_path, unique_prefix("acm"), partitions=2)
    stack.create_topics()
    return stack


@pytest.fixture
def manager() -> Iterator[AlertManager]:
    am = AlertManager()
    try:
        yield am
    finally:
        am.go_down()


def map_low(patient: int, n: int, **changes: Any) -> AlertEvent:
    """Event n of the MAP-low alert of patient ``patient`` (start, then reminders)."""
    at = T0 + timedelta(minutes=patient, seconds=30 * n)
    alert_id = f"alert-{patient:03d}"
    fields: dict[str, Any] = {
        "event_id": f"{alert_id}-{n}",
        "alert_id": alert_id,
        "sequence": n,
        "patient_id": f"MRN-{patient:05d}",
        "bed": f"ICU{1 + patient % 2}-{patient:02d}",
        "care_unit": f"ICU{1 + patient % 2}",
        "site": "NORTH" if patient % 3 else "SOUTH",
        "phase": "start" if n == 0 else "update",
        "reason": "onset" if n == 0 else "reminder",
        "priority": ("low", "medium", "high")[patient % 3],
        "rule_id": "perfusion.map_low",
        "rule_version": 1,
        "title": "MAP below 65 mmHg",
        "values": {"map_median_1min_mmhg": 60.0 - n * 0.5},
        "thresholds": {"map_median_1min_mmhg": 65.0},
        "condition_since": T0 + timedelta(minutes=patient) - timedelta(minutes=5),
        "triggered_at": at,
        "raised_at": at + timedelta(milliseconds=300),
        "explanation": ("map_median_1min_mmhg < 65 for 300 s",),
        "source": "CLINICAL.md Perfusion",
    }
    fields.update(changes)
    return AlertEvent(**fields)


def publish(stack: Stack, records: list[AlertEvent | bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    try:
        for record in records:
            if isinstance(record, AlertEvent):
                key, value = record.patient_id.encode(), record.model_dump_json().encode()
            else:
                key, value = b"MRN-99999", record
            producer.send(stack.registry.alerts, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


class RunningSender:
    """An :class:`AcmSender` in a thread of the test (stopped and joined by :meth:`stop`)."""

    def __init__(self, stack: Stack, config: SenderConfig, group: str) -> None:
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self.sender = AcmSender(
            config,
            REPORTER,
            bootstrap_servers=stack.bootstrap,
            topics=stack.registry,
            group_id=group,
            from_beginning=True,
            backoff=Backoff(config.backoff_base_s, config.backoff_cap_s),
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sender.run(should_stop=self.stop_flag.is_set)
        except BaseException as exc:
            self.error = exc
            raise

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the sender did not stop"
        assert self.error is None, self.error


def metric(name: str, destination: str) -> float:
    return REGISTRY.get_sample_value(name, {"destination": destination}) or 0.0


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll every 20 ms; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def uncommitted(stack: Stack, group: str) -> int:
    """Records of the alerts topic the group has not committed (no commit = from 0)."""
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=stack.bootstrap)
    try:
        committed = admin.list_group_offsets(group).get(group, {})
        topic = stack.registry.alerts
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        return sum(
            ends[tp] - max(committed[tp].offset if tp in committed else 0, 0) for tp in partitions
        )
    finally:
        consumer.close()
        admin.close()


def delivery_alarms(stack: Stack) -> list[AlertEvent]:
    alerts = [
        AlertEvent.model_validate_json(v)
        for v in stack.read_all("alerts", idle_s=1)
        if DELIVERY_RULE_ID.encode() in v
    ]
    return [a for a in alerts if a.rule_id == DELIVERY_RULE_ID]


def test_every_alert_reaches_an_acking_receiver_in_order_and_bad_records_are_dead_lettered(
    stack: Stack, manager: AlertManager
) -> None:
    events = [map_low(p, n) for n in range(10) for p in range(1, 21)]  # 200 events, 20 patients
    not_json = b'{"event_id": "x", "phase": "start"'  # cut short
    not_alert = b'{"hello": "world"}'
    publish(stack, [*events[:100], not_json, *events[100:], not_alert])
    config = SenderConfig(host="127.0.0.1", port=manager.port, watchdog_s=5.0, ack_timeout_s=2)
    group = f"acm-{uuid.uuid4().hex[:8]}"
    sender = RunningSender(stack, config, group)
    try:
        wait_until(lambda: len(manager.control_ids()) >= 200, 60, "200 deliveries")
    finally:
        sender.stop()
    received = manager.control_ids()
    seconds = manager.arrivals[-1] - manager.arrivals[0]
    print(f"\n200 ORU^R40 sent one by one, each after the last one's ACK: {199 / seconds:.0f}/s")
    assert sorted(received) == sorted(e.event_id for e in events)  # each once: no resends
    for patient in range(1, 21):  # per patient (one key, one partition): in order
        mine = [i for i in received if i.startswith(f"alert-{patient:03d}-")]
        assert mine == [f"alert-{patient:03d}-{n}" for n in range(10)]
    first = decode_message(manager.frames[0])
    assert first.text(first.segments[0], 9) == "ORU"  # MSH-9.1; ^R40^ORU_R40 follow
    assert first.segments[0].raw(9) == "ORU^R40^ORU_R40"
    # Kafka offsets committed behind the ACKs, the bad records included once dead-lettered
    assert uncommitted(stack, group) == 0
    letters = [DeadLetter.model_validate_json(v) for v in stack.read_all("deadletter", 1)]
    assert sorted(letter.original for letter in letters) == sorted([not_json, not_alert])
    assert {letter.source for letter in letters} == {"acm.send"}
    assert all(letter.original_topic == stack.registry.alerts for letter in letters)
    destination = config.destination
    assert metric("vigil_acm_messages_acked_total", destination) == 200
    assert metric("vigil_acm_messages_sent_total", destination) == 200
    assert metric("vigil_acm_retries_total", destination) == 0
    assert metric("vigil_acm_dead_letters_total", destination) == 2
    assert not delivery_alarms(stack)


def test_receiver_stops_acking_then_goes_away_raises_the_delivery_alarm_and_loses_nothing(
    stack: Stack, manager: AlertManager
) -> None:
    config = SenderConfig(
        host="127.0.0.1",
        port=manager.port,
        ack_timeout_s=0.5,
        connect_timeout_s=0.5,
        backoff_base_s=0.1,
        backoff_cap_s=0.4,
        watchdog_s=1.5,
        commit_interval_s=0.2,
        site="NORTH",
    )
    group = f"acm-{uuid.uuid4().hex[:8]}"
    destination = config.destination
    before = [map_low(p, 0) for p in range(1, 6)]
    after = [map_low(p, 1) for p in range(1, 6)]
    publish(stack, list(before))
    sender = RunningSender(stack, config, group)
    try:
        wait_until(lambda: metric("vigil_acm_messages_acked_total", destination) == 5, 30, "5")
        wait_until(
            lambda: uncommitted(stack, group) == 0,
            30,
            "the first five committed",
        )
        # 1. the receiver keeps the connection but stops acknowledging
        manager.acking = False
        stopped = time.monotonic()
        publish(stack, list(after))
        wait_until(lambda: metric("vigil_acm_delivery_alarm_active", destination) == 1, 15, "x")
        raise_s = time.monotonic() - stopped
        print(f"\ndelivery alarm raised {raise_s:.2f} s after the receiver stopped (limit 1.5 s)")
        assert config.watchdog_s <= raise_s < config.watchdog_s + 2.0
        [start] = delivery_alarms(stack)
        assert (start.phase, start.kind, start.site) == ("start", "technical", "NORTH")
        assert start.values["seconds_since_last_ack"] >= config.watchdog_s
        # resent while unacknowledged, never committed
        wait_until(lambda: metric("vigil_acm_retries_total", destination) >= 2, 10, "retries")
        resent = set(manager.control_ids()[5:])
        assert len(resent) == 1  # one message, the head of its partition, again and again
        assert resent <= {a.event_id for a in after}
        assert uncommitted(stack, group) == len(after) + 1  # + the alarm's own start event
        # 2. the receiver goes away (connection lost, then refused): still no drop
        manager.go_down()
        time.sleep(1.0)
        assert metric("vigil_acm_delivery_alarm_active", destination) == 1
        assert metric("vigil_acm_pending_messages", destination) == 1
        assert metric("vigil_acm_seconds_since_last_ack", destination) > 2.0
        # 3. it returns: every waiting alert is delivered, the alarm ends (and both
        # delivery alarm events, being alerts, reach the receiver too)
        manager.acking = True
        manager.come_back()
        wait_until(lambda: metric("vigil_acm_delivery_alarm_active", destination) == 0, 15, "end")
        start_end = {start.event_id}
        wait_until(lambda: len(delivery_alarms(stack)) == 2, 15, "the end event")
        end = delivery_alarms(stack)[1]
        assert (end.phase, end.alert_id) == ("end", start.alert_id)
        start_end.add(end.event_id)
        wanted = {e.event_id for e in before + after} | start_end
        wait_until(lambda: wanted <= set(manager.control_ids()), 20, "every alert delivered")
        wait_until(
            lambda: uncommitted(stack, group) == 0,
            20,
            "everything committed",
        )
    finally:
        sender.stop()
    received = manager.control_ids()
    # in order per patient, whatever was resent in between
    for p in range(1, 6):
        mine = [i for i in dict.fromkeys(received) if i.startswith(f"alert-{p:03d}-")]
        assert mine == [f"alert-{p:03d}-0", f"alert-{p:03d}-1"]
    assert metric("vigil_acm_messages_acked_total", destination) == 12  # 10 alerts + 2 alarm
    assert metric("vigil_acm_pending_messages", destination) == 0


def test_an_idle_sender_keeps_the_link_watched_with_keepalives(
    stack: Stack, manager: AlertManager
) -> None:
    config = SenderConfig(
        host="127.0.0.1",
        port=manager.port,
        ack_timeout_s=0.3,
        connect_timeout_s=0.3,
        backoff_base_s=0.1,
        backoff_cap_s=0.3,
        watchdog_s=1.0,
        keepalive_s=0.3,
    )
    destination = config.destination
    sender = RunningSender(stack, config, f"acm-{uuid.uuid4().hex[:8]}")
    try:
        wait_until(lambda: len(manager.control_ids()) >= 3, 15, "three keep-alives")
        assert all(i.startswith("keepalive-") for i in manager.control_ids())
        first = decode_message(manager.frames[0])
        assert [s.raw(3) for s in first.segments if s.name == "OBX"][2].startswith("196614^")
        assert metric("vigil_acm_delivery_alarm_active", destination) == 0
        # the receiver disappears while no alert waits: signalled all the same
        manager.go_down()
        gone = time.monotonic()
        wait_until(lambda: metric("vigil_acm_delivery_alarm_active", destination) == 1, 10, "x")
        raise_s = time.monotonic() - gone
        print(f"\nidle: delivery alarm {raise_s:.2f} s after the receiver went away (limit 1 s)")
        assert raise_s < config.watchdog_s + config.keepalive_s + 2.0
        manager.come_back()
        wait_until(lambda: metric("vigil_acm_delivery_alarm_active", destination) == 0, 10, "end")
        # the alarm's start and end are alerts: they reach the receiver once it is back
        wait_until(lambda: len(delivery_alarms(stack)) == 2, 10, "start and end on the topic")
        alarm_ids = {a.event_id for a in delivery_alarms(stack)}
        wait_until(lambda: alarm_ids <= set(manager.control_ids()), 10, "alarm events delivered")
    finally:
        sender.stop()
    assert metric("vigil_acm_messages_sent_total", destination) >= 2
    assert metric("vigil_acm_keepalives_sent_total", destination) >= 4


def test_cli_send_filters_by_site_and_priority_and_stops_after_max(
    stack: Stack, manager: AlertManager
) -> None:
    wanted = [map_low(1, 0), map_low(2, 0), map_low(4, 0)]  # NORTH, medium / high / medium
    unwanted = [map_low(3, 0), map_low(6, 0), map_low(7, 0, priority="low")]  # SOUTH; low
    assert all(a.site == "NORTH" and a.priority != "low" for a in wanted)
    assert all(a.site != "NORTH" or a.priority == "low" for a in unwanted)
    publish(stack, [*unwanted, *wanted])
    env = {**stack.env(), "VIGIL_LOG_LEVEL": "WARNING"}
    args = ["send", "--to", f"127.0.0.1:{manager.port}", "--from-beginning", "--max", "3"]
    args += ["--site", "north", "--priority", "medium", "--metrics-port", "0"]
    args += ["--group", f"acm-cli-{uuid.uuid4().hex[:8]}"]
    result = CliRunner().invoke(acm_group, args, env=env)
    assert result.exit_code == 0, result.output
    assert "3 alert events delivered" in result.output
    assert sorted(manager.control_ids()) == sorted(a.event_id for a in wanted)


def test_alerts_tail_filters_and_a_group_resumes_where_it_stopped(stack: Stack) -> None:
    events = [map_low(p, 0) for p in range(1, 13)]
    publish(stack, list(events))
    env = {**stack.env(), "VIGIL_LOG_LEVEL": "WARNING"}
    filt = AlertFilter.of(sites=["NORTH"], units=["ICU1"], min_priority="medium")
    expected = [e.event_id for e in events if filt.matches(e)]
    assert 0 < len(expected) < len(events)
    tail = ["tail", "--json", "--from-beginning", "--timeout", "2"]
    result = CliRunner().invoke(
        alerts_group, [*tail, "--site", "north", "--unit", "ICU1", "--priority", "medium"], env=env
    )
    assert result.exit_code == 0, result.output
    got = [AlertEvent.model_validate_json(line).event_id for line in result.stdout.splitlines()]
    assert sorted(got) == sorted(expected)
    # a remote centre's group: two runs share the events, none twice, none missed
    group = ["--group", f"tele-{uuid.uuid4().hex[:8]}"]
    first = CliRunner().invoke(alerts_group, [*tail, *group, "--max", "5"], env=env)
    second = CliRunner().invoke(alerts_group, [*tail, *group], env=env)
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    ids = [
        AlertEvent.model_validate_json(line).event_id
        for line in first.stdout.splitlines() + second.stdout.splitlines()
    ]
    assert len(first.stdout.splitlines()) == 5
    assert sorted(ids) == sorted(e.event_id for e in events)
