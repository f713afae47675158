"""The faust app: thin agents that decode, look up per-patient state, call the core, emit.

Everything clinical lives in pure modules (``streams.monitor``, ``streams.alarm``,
``streams.rolling``); this module only wires them to Kafka. Per-patient state is a
changelog-backed table keyed by patient id, so a restarted worker recovers it.
Processing is at-least-once: after a crash, re-delivered samples are not after the
patient's last event time and change nothing (see ``streams.monitor``), and alert
events carry deterministic ids, so consumers drop any duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from pydantic import ValidationError

from schemas.deadletter import DeadLetter
from schemas.observations import VitalSigns
from schemas.topics import TopicRegistry
from streams import metrics
from streams.monitor import PatientMonitor
from streams.rules import RuleSet

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to know; built from ``services.config.Settings``."""

    app_id: str
    bootstrap_servers: str
    store: str
    datadir: Path
    topics: TopicRegistry
    rules: RuleSet


def create_app(config: WorkerConfig, clock: Clock = _wall_clock) -> faust.App:
    """Build the faust app with its topics, table and agents."""
    partitions = config.topics.partitions
    app = faust.App(
        config.app_id,
        broker=[f"kafka://{server}" for server in config.bootstrap_servers.split(",")],
        store=config.store,
        datadir=str(config.datadir),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=partitions,
        topic_replication_factor=config.topics.replication_factor,
        producer_acks=-1,
        # Batch produce requests (changelog and alerts): without a linger aiokafka sends a
        # request per record and the worker spends a third of its time in socket writes.
        producer_linger=0.02,
        producer_max_batch_size=256 * 1024,
        # A dead worker's patients move to another within ~10 s, not faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        consumer_auto_offset_reset="earliest",
    )

    def raw_topic(base_name: str) -> Any:
        return app.topic(
            config.topics.name(base_name),
            key_serializer="raw",
            value_serializer="raw",
            partitions=config.topics.partitions_of(base_name),
        )

    vitals_topic, alerts_topic, deadletter_topic = (
        raw_topic("vitals"),
        raw_topic("alerts"),
        raw_topic("deadletter"),
    )
    monitors = app.Table(
        "patient-monitor",
        default=None,
        partitions=partitions,
        help="PatientMonitor state by patient id (JSON; changelog-backed)",
    )

    # Live monitors of this worker's patients, so a sample costs no table read; the table
    # (and its changelog) stays the source of truth and is written on every sample.
    # Any rebalance drops the cache: a partition may have moved and come back.
    live: dict[str, PatientMonitor] = {}

    async def _drop_live(_sender: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        live.clear()

    app.on_partitions_revoked.connect(_drop_live)
    app.on_partitions_assigned.connect(_drop_live)

    async def dead_letter(event: Any, reason: str, detail: str) -> None:
        message = event.message
        key = event.key
        letter = DeadLetter.of(
            bytes(event.value or b""),
            source="worker.vitals",
            reason=reason,
            detail=detail,
            original_topic=message.topic,
            original_partition=message.partition,
            original_offset=message.offset,
            original_key=key.decode("utf-8", "replace") if isinstance(key, bytes) else None,
            received_at=clock(),
        )
        delivery = await deadletter_topic.send(
            key=b"worker.vitals", value=letter.model_dump_json().encode()
        )
        await delivery  # the record counts as handled only once its dead letter is stored
        metrics.DEAD_LETTERS.labels("vitals", reason).inc()

    async def on_vitals(event: Any) -> None:
        try:
            sample = VitalSigns.model_validate_json(event.value or b"")
        except ValidationError as exc:
            await dead_letter(event, "invalid_vitals", str(exc))
            return
        if event.key != sample.patient_id.encode():
            await dead_letter(event, "key_mismatch", "Kafka key must be the patient id")
            return
        patient_id = sample.patient_id
        monitor = live.pop(patient_id, None)  # back in the cache only if all below succeeds
        if monitor is None:
            state = monitors.get(patient_id)
            monitor = PatientMonitor.from_state(state) if state else PatientMonitor()
        late_before = monitor.late_samples
        drafts = monitor.on_vitals(sample, config.rules)
        if monitor.late_samples != late_before:
            metrics.SAMPLES_LATE.labels("vitals").inc()
        # Alerts first, acknowledged by Kafka, then the state that remembers them: a crash
        # in between re-emits the alert (same event id) instead of losing it.
        for draft in drafts:
            alert = draft.to_event(raised_at=clock())
            delivery = await alerts_topic.send(
                key=alert.patient_id.encode(), value=alert.model_dump_json().encode()
            )
            await delivery
            metrics.ALERT_EVENTS.labels(alert.rule_id, alert.phase, alert.priority).inc()
            if alert.trigger_received_at is not None:
                latency = (clock() - alert.trigger_received_at).total_seconds()
                metrics.EVENT_TO_ALERT_LATENCY.observe(max(0.0, latency))
        monitors[patient_id] = monitor.to_state()
        live[patient_id] = monitor

    @app.agent(vitals_topic, name="vitals")
    async def process_vitals(stream: Any) -> None:
        async for event in stream.events():
            metrics.SAMPLES_IN.labels("vitals").inc()
            try:
                await on_vitals(event)
            except Exception as exc:  # one bad record must never stop the unit's monitoring
                message = event.message
                log.exception(
                    "vitals record %s[%d]@%d failed; dead-lettered",
                    message.topic,
                    message.partition,
                    message.offset,
                )
                await dead_letter(event, "processing_error", repr(exc))

    return app
