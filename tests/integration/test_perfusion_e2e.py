"""The first alert, end to end through a real broker: simulator -> worker -> alerts topic.

One patient with a scripted hypotension episode among normal ones yields exactly one
start and one end, the start within one sample of the 5-minute mark; the same
scripted input published at two speeds yields identical alert events; bad input goes
to the dead-letter topic and the worker keeps going.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from schemas.alerts import AlertEvent, AlertPhase, AlertPriority
from schemas.annotations import GroundTruth
from schemas.codes import Quantity
from schemas.deadletter import DeadLetter
from services.simulator import HypotensionEpisode, SimulationConfig, patient_id_of, simulate
from tests.support.patients import first_time_median_at_or_above_after, first_time_median_below
from tests.support.stack import Stack, unique_prefix, wait_for

START = datetime(2026, 5, 1, 14, 0, tzinfo=UTC)
BEDS, SEED, HYPO_BED, ONSET_S, EPISODE_S, DURATION_S = 6, 11, 3, 90, 480, 780
SIM_ARGS = (
    "simulate", "--beds", str(BEDS), "--seed", str(SEED), "--start", "2026-05-01T14:00:00Z",
    "--duration", str(DURATION_S), "--hypotension-bed", str(HYPO_BED),
    "--hypotension-onset", str(ONSET_S), "--hypotension-duration", str(EPISODE_S),
    "--no-default-scenarios",
)  # fmt: skip
WALL_CLOCK_FIELDS = {"raised_at", "trigger_received_at"}


def run_scenario(stack: Stack, speed: str) -> list[AlertEvent]:
    stack.create_topics()
    stack.start_worker()
    done = stack.vigil(*SIM_ARGS, "--speed", speed, "--truth", str(stack.workdir / "truth.jsonl"))
    assert done.returncode == 0, done.stderr
    assert f"vitals={BEDS * DURATION_S}" in done.stderr
    stack.wait_until_processed("vitals")
    return [AlertEvent.model_validate_json(v) for v in stack.read_all("alerts")]


@pytest.fixture(scope="module")
def max_speed_run(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, list[AlertEvent]]]:
    stack = Stack(kafka_bootstrap, tmp_path_factory.mktemp("max"), unique_prefix("max"))
    try:
        yield stack, run_scenario(stack, "max")
    finally:
        stack.stop_all()


def expected_map_trace() -> list[float]:
    """The MAP the simulator publishes for the episode bed (same seed, same physiology)."""
    config = SimulationConfig(
        beds=BEDS, seed=SEED, start=START, duration_s=DURATION_S,
        episodes=(HypotensionEpisode(HYPO_BED, ONSET_S, EPISODE_S),),
    )  # fmt: skip
    trace = []
    for _second, batch in simulate(config):
        value = batch[HYPO_BED - 1].value_of(Quantity.ABP_MEAN)
        assert value is not None
        trace.append(value)
    return trace


def test_one_start_and_one_end_for_the_hypotensive_patient_only(
    max_speed_run: tuple[Stack, list[AlertEvent]],
) -> None:
    stack, everything = max_speed_run
    patient = patient_id_of(HYPO_BED)
    assert [(a.patient_id, a.rule_id, a.phase) for a in everything if a.patient_id != patient] == []
    alerts = [a for a in everything if a.rule_id == "perfusion.map_low"]
    assert [(a.patient_id, a.phase) for a in alerts] == [
        (patient, AlertPhase.START),
        (patient, AlertPhase.END),
    ], stack.worker_log()
    start, end = alerts
    assert start.priority is AlertPriority.MEDIUM
    assert start.rule_id == "perfusion.map_low"
    assert start.alert_id == end.alert_id
    assert start.bed == f"ICU1-{HYPO_BED:02d}"

    trace = expected_map_trace()
    crossed = first_time_median_below(trace, 65)
    five_minute_mark = START + timedelta(seconds=crossed + 300)
    assert abs(start.triggered_at - five_minute_mark) <= timedelta(seconds=1)
    assert start.condition_since == START + timedelta(seconds=crossed)
    # and relative to the scripted onset: 5 min plus at most the 1-min median's lag
    assert timedelta(seconds=300) <= start.triggered_at - (START + timedelta(seconds=ONSET_S))
    assert start.triggered_at - (START + timedelta(seconds=ONSET_S)) <= timedelta(seconds=360)

    recovered = first_time_median_at_or_above_after(trace, 67, after=crossed + 300)  # hysteresis
    assert abs(end.triggered_at - (START + timedelta(seconds=recovered + 120))) <= timedelta(
        seconds=1
    )
    lines = (stack.workdir / "truth.jsonl").read_text().splitlines()
    truth = [GroundTruth.model_validate_json(line) for line in lines]
    assert [(t.scenario, t.patient_id, t.bed, t.onset, t.end) for t in truth] == [
        (
            "hypotension",
            patient,
            f"ICU1-{HYPO_BED:02d}",
            START + timedelta(seconds=ONSET_S),
            START + timedelta(seconds=ONSET_S + EPISODE_S),
        )
    ]
    published = [GroundTruth.model_validate_json(v) for v in stack.read_all("groundtruth")]
    assert published == truth


def test_worker_metrics_count_samples_alerts_and_latency(
    max_speed_run: tuple[Stack, list[AlertEvent]],
) -> None:
    stack, alerts = max_speed_run
    assert stack.metric("vigil_samples_in_total", '{source="vitals"}') == BEDS * DURATION_S
    assert (
        stack.metric(
            "vigil_alert_events_total",
            '{phase="start",priority="medium",rule_id="perfusion.map_low"}',
        )
        == 1
    )
    assert stack.metric("vigil_event_to_alert_latency_seconds_count") == len(alerts)


def test_same_input_at_another_speed_yields_identical_alert_events(
    max_speed_run: tuple[Stack, list[AlertEvent]],
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    _stack, at_max_speed = max_speed_run
    stack = Stack(kafka_bootstrap, tmp_path, unique_prefix("x40"))
    try:
        at_40x = run_scenario(stack, "40")
    finally:
        stack.stop_all()
    assert len([a for a in at_max_speed if a.rule_id == "perfusion.map_low"]) == 2
    assert [a.model_dump(exclude=WALL_CLOCK_FIELDS) for a in at_40x] == [
        a.model_dump(exclude=WALL_CLOCK_FIELDS) for a in at_max_speed
    ]


def test_bad_input_is_dead_lettered_with_its_bytes_and_the_worker_keeps_going(
    max_speed_run: tuple[Stack, list[AlertEvent]],
) -> None:
    stack, _alerts = max_speed_run
    consumed_before = stack.metric("vigil_samples_in_total", '{source="vitals"}')
    assert consumed_before is not None
    garbage = b"\x0bMSH|^~\\&|not json\x1c\r"
    valid_sample = json.loads(
        next(simulate(SimulationConfig(beds=1, start=START + timedelta(hours=1))))[1][
            0
        ].model_dump_json()
    )
    wrong_key = json.dumps(valid_sample).encode()
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    topic = stack.registry.vitals
    producer.send(topic, key=b"sim-001", value=garbage)
    producer.send(topic, key=b"somebody-else", value=wrong_key)
    producer.send(topic, key=b"sim-001", value=wrong_key)  # valid: processed after the bad ones
    producer.flush()
    producer.close()

    stack.wait_until_processed("vitals")
    letters = [DeadLetter.model_validate_json(v) for v in stack.read_all("deadletter")]
    assert sorted((d.reason, d.original) for d in letters) == sorted(
        [("invalid_vitals", garbage), ("key_mismatch", wrong_key)]
    )
    assert all(d.original_topic == topic and d.original_offset is not None for d in letters)
    wait_for(
        lambda: (
            stack.metric("vigil_samples_in_total", '{source="vitals"}') == BEDS * DURATION_S + 3
        ),
        30,
        "the valid sample after the bad ones to be consumed",
    )
    assert stack.processes[0].poll() is None, "worker must keep running"


def test_alerts_tail_prints_the_alert_events_as_json(
    max_speed_run: tuple[Stack, list[AlertEvent]],
) -> None:
    stack, alerts = max_speed_run
    done = stack.vigil(
        "alerts", "tail", "--json", "--from-beginning", "--max", str(len(alerts)), "--timeout", "5"
    )
    assert done.returncode == 0, done.stderr
    printed = [AlertEvent.model_validate_json(line) for line in done.stdout.splitlines()]
    assert sorted(printed, key=lambda a: a.event_id) == sorted(alerts, key=lambda a: a.event_id)
    human = stack.vigil("alerts", "tail", "--from-beginning", "--max", "5", "--timeout", "5")
    assert human.returncode == 0, human.stderr
    assert "START  MEDIUM ICU1-03  sim-003  MAP below 65 mmHg" in human.stdout, human.stdout
