"""A worker killed with SIGKILL mid-episode is replaced by one on an empty disk: it
recovers the patient state from the table's changelog, so the alert that started
before the kill ends after it, and is never raised a second time; and the run yields
every alert event of an uninterrupted run (the worker's pipeline without Kafka), any
repeat with the same event id and content."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaProducer

from schemas.alerts import AlertEvent, AlertPhase
from services.simulator import HypotensionEpisode, SimulationConfig, patient_id_of, simulate
from streams.offline import OfflinePipeline
from streams.rules import load_rules
from tests.support.stack import Stack, unique_prefix, wait_for

CONFIG = SimulationConfig(
    beds=3,
    seed=5,
    start=datetime(2026, 6, 2, 9, 0, tzinfo=UTC),
    duration_s=780,
    episodes=(HypotensionEpisode(2, onset_s=90, duration_s=480),),
)
KILL_AFTER_S = 450  # the alert has started (~400 s), the episode is still going


def publish(stack: Stack, batches: list[list[bytes]], keys: list[list[bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5)
    for batch_keys, batch in zip(keys, batches, strict=True):
        for key, value in zip(batch_keys, batch, strict=True):
            producer.send(stack.registry.vitals, key=key, value=value)
    producer.flush()
    producer.close()


MAP_RULE = "perfusion.map_low"
WALL_CLOCK_FIELDS = {"raised_at", "trigger_received_at"}


def all_alerts(stack: Stack) -> list[AlertEvent]:
    return [AlertEvent.model_validate_json(v) for v in stack.read_all("alerts", idle_s=2)]


def expected_events() -> set[str]:
    pipeline = OfflinePipeline(load_rules())
    return {
        d.event_id
        for _t, batch in simulate(CONFIG)
        for s in batch
        for d in pipeline.feed("vitals", s)
    }


def alerts(stack: Stack) -> list[AlertEvent]:
    """The MAP rule's events (the episode also raises a shock-index alert, not followed here)."""
    found = [AlertEvent.model_validate_json(v) for v in stack.read_all("alerts", idle_s=2)]
    return [a for a in found if a.rule_id == MAP_RULE]


def test_sigkilled_worker_recovers_its_state_and_ends_the_alert_it_started(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    seconds = list(simulate(CONFIG))
    values = [[s.model_dump_json().encode() for s in batch] for _t, batch in seconds]
    keys = [[s.patient_id.encode() for s in batch] for _t, batch in seconds]
    stack = Stack(kafka_bootstrap, tmp_path, unique_prefix("restart"))
    try:
        stack.create_topics()
        first = stack.start_worker("worker-1")
        publish(stack, values[:KILL_AFTER_S], keys[:KILL_AFTER_S])
        stack.wait_until_processed("vitals")
        before = alerts(stack)
        assert [(a.patient_id, a.phase) for a in before] == [
            (patient_id_of(2), AlertPhase.START)
        ], stack.worker_log("worker-1")

        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        publish(stack, values[KILL_AFTER_S:], keys[KILL_AFTER_S:])
        second = stack.start_worker("worker-2", data_dir=tmp_path / "another-host")

        def stalled() -> str:
            os.kill(second.pid, signal.SIGUSR1)  # mode's Worker logs every task's stack
            time.sleep(2)
            return "\n".join(
                (
                    stack.offsets_report("vitals"),
                    stack.metrics_report(),
                    stack.worker_log("worker-2", tail_chars=60000),
                )
            )

        # Not the group lag: after a SIGKILL, faust 0.15.3's committed offsets can stall
        # while processing goes on (its acked-offset bookkeeping); see the README.
        wait_for(
            lambda: any(a.phase is AlertPhase.END for a in alerts(stack)),
            120,
            "the MAP alert to end",
            stalled,
        )
        after = alerts(stack)
        wait_for(
            lambda: len({e.event_id for e in all_alerts(stack)}) >= len(expected_events()),
            60,
            "every alert event of the uninterrupted run",
        )
        everything = all_alerts(stack)
    finally:
        stack.stop_all()

    unique = {a.event_id: a for a in after}
    assert [(a.phase, a.alert_id) for a in unique.values()] == [
        (AlertPhase.START, before[0].alert_id),
        (AlertPhase.END, before[0].alert_id),
    ]
    # every rule, not only MAP: the same events as an uninterrupted run
    pipeline = OfflinePipeline(load_rules())
    uninterrupted = {
        d.event_id: d.to_event(raised_at=CONFIG.start).model_dump(exclude=WALL_CLOCK_FIELDS)
        for _t, batch in seconds
        for sample in batch
        for d in pipeline.feed("vitals", sample)
    }
    assert uninterrupted, "the episode raises alerts"
    for event in everything:
        assert event.event_id in uninterrupted, (event, sorted(uninterrupted.values(), key=str))
        assert event.model_dump(exclude=WALL_CLOCK_FIELDS) == uninterrupted[event.event_id]
    assert {e.event_id for e in everything} == set(uninterrupted)
