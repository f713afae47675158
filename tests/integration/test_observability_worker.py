"""A real worker on the session broker: /healthz and /readyz turn ready, /metrics shows
the consumer lag of its input partitions and the alarm it raised as an active alarm, a
discharged patient's state leaves memory and, a month of event time later, shrinks to a
stub in the table's changelog, and its log is JSON lines in which the patient's id never
appears."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas.common import SourceInfo
from schemas.context import ContextEvent, Discharge
from services.simulator import HypotensionEpisode, SimulationConfig, patient_id_of, simulate
from streams.offline import partition_of
from streams.patient import RETIRE_AFTER_DISCHARGE_S
from tests.support.patients import vitals as vital_signs
from tests.support.stack import Stack, unique_prefix, wait_for

CONFIG = SimulationConfig(
    beds=2,
    seed=3,
    start=datetime(2026, 6, 2, 9, 0, tzinfo=UTC),
    duration_s=480,
    episodes=(HypotensionEpisode(1, onset_s=30, duration_s=450),),
)


def probe(port: int, path: str) -> tuple[int, dict[str, object] | None]:
    """(HTTP status, JSON body) of a probe; (0, None) while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, None


def changelog_values(stack: Stack, key: bytes) -> list[dict[str, object] | None]:
    """Every value written for ``key`` to the state table's changelog, in order."""
    topic = f"{stack.app_id}-patient-state-changelog"
    consumer = KafkaConsumer(bootstrap_servers=stack.bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        values: list[dict[str, object] | None] = []
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for records in consumer.poll(timeout_ms=1000).values():
                values += [
                    None if r.value is None else json.loads(r.value)
                    for r in records
                    if r.key == key
                ]
        return values
    finally:
        consumer.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text: str = response.read().decode()
    return text


@pytest.mark.kafka
def test_worker_probes_lag_active_alarms_and_json_logs_without_patient_ids(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_LOG_FORMAT", "json")
    monkeypatch.setenv("VIGIL_STORE", "memory://")
    stack = Stack(kafka_bootstrap, tmp_path, unique_prefix("observe"))
    port = stack.metrics_port
    try:
        stack.create_topics()
        stack.start_worker()
        wait_for(lambda: probe(port, "/healthz")[0] == 200, 30, "/healthz", stack.worker_log)
        wait_for(lambda: probe(port, "/readyz")[0] == 200, 45, "/readyz", stack.worker_log)
        status, body = probe(port, "/readyz")
        assert status == 200
        assert body == {
            "status": "ok",
            "checks": {
                "event_loop": True,
                "partitions_assigned": True,
                "tables_recovered": True,
                "consumer_fetching": True,
            },
        }

        producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5)
        for _t, batch in simulate(CONFIG):
            for sample in batch:
                producer.send(
                    stack.registry.vitals,
                    key=sample.patient_id.encode(),
                    value=sample.model_dump_json().encode(),
                )
        producer.flush()
        producer.close()
        started = [a for a in stack.wait_for_alert("start", 45) if a.phase == "start"]
        patient = patient_id_of(1)
        assert {a.patient_id for a in started} == {patient}
        priorities = {str(a.priority) for a in started}

        def alarms_shown() -> bool:
            text = scrape(port)
            shown = sum(
                float(value)
                for priority in priorities
                for value in re.findall(
                    rf'^vigil_active_alarms{{kind="physiological",priority="{priority}"}} (\S+)$',
                    text,
                    re.MULTILINE,
                )
            )
            return shown >= 1

        wait_for(alarms_shown, 10, "the alert among the active alarms", stack.worker_log)

        vitals = stack.registry.vitals
        lag_line = re.compile(
            rf'^vigil_consumer_lag_records{{partition="(\d+)",topic="{re.escape(vitals)}"}} (\S+)$',
            re.MULTILINE,
        )

        def lag_drained() -> bool:
            found = {int(p): float(v) for p, v in lag_line.findall(scrape(port))}
            return set(found) == set(range(stack.partitions)) and not any(found.values())

        wait_for(lag_drained, 10, "lag of every vitals partition, drained", stack.worker_log)
        assert stack.metric("vigil_worker_ready") == 1.0
        assert stack.metric("vigil_assigned_partitions") is not None
        assert stack.metric("vigil_worker_patients_in_memory") == CONFIG.beds

        # a discharge ends the patient's alarm; once its state is written it leaves memory
        end = CONFIG.start + timedelta(seconds=480)  # the end of the simulated stretch
        discharge = Discharge(
            patient_id=patient, observed_at=end, received_at=end, source=SourceInfo(adapter="t")
        )
        producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
        producer.send(
            stack.registry.name("context"),
            key=patient.encode(),
            value=ContextEvent(discharge).model_dump_json().encode(),
        )
        producer.flush()
        producer.close()
        wait_for(
            lambda: stack.metric("vigil_worker_patients_in_memory") == CONFIG.beds - 1,
            30,
            "the discharged patient's state out of memory",
            stack.worker_log,
        )
        written = changelog_values(stack, patient.encode())[-1]
        assert written is not None
        assert written["discharged"] is not None
        assert "groups" in written  # the full state, until a month after the discharge

        # a month later in event time, a record of another patient of the same partition
        # retires the discharged state: the changelog's latest value is a stub
        partitions = stack.partitions
        other = next(
            f"p-later-{i}"
            for i in range(1000)
            if partition_of(f"p-later-{i}", partitions) == partition_of(patient, partitions)
        )
        later = end + timedelta(seconds=RETIRE_AFTER_DISCHARGE_S + 60)
        producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
        producer.send(
            stack.registry.vitals,
            key=other.encode(),
            value=vital_signs(other, later, 80).model_dump_json().encode(),
        )
        producer.flush()
        producer.close()
        wait_for(
            lambda: stack.metric("vigil_patient_states_retired_total") == 1,
            30,
            "the discharged patient's state retired",
            stack.worker_log,
        )
        stub = changelog_values(stack, patient.encode())[-1]
        assert stub is not None
        assert stub["retired"] is True
        assert "groups" not in stub
        assert len(json.dumps(stub)) < 1000
    finally:
        stack.stop_all()

    log = (tmp_path / "worker.log").read_text()
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert entries, log[-2000:]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e["logger"].startswith("faust") for e in entries), "faust's logs are JSON too"
    not_json = [line for line in log.splitlines() if line.strip() and not line.startswith("{")]
    assert not not_json, not_json[:5]
    for bed in range(1, CONFIG.beds + 1):
        assert patient_id_of(bed) not in log
