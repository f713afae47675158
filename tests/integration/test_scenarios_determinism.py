"""The simulator's scenario set through the real broker and worker, in real time (1x), at
full speed, and as a backlog read by a worker whose merge must keep pausing its inputs:
identical alert events (ignoring the wall-clock fields), and identical to the worker's
pipeline run without Kafka (``streams.offline``).

A 400-s plan that raises physiological, escalating and technical alarms within minutes:
hypotension (MAP rule and shock index), cerebral desaturation (rSO2 drop, low, asymmetry),
and a bedside monitor disconnect ("no data" from vitals and the arterial line, and back).
"""

from __future__ import annotations

import re
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.alerts import AlertEvent
from services.sim.engine import IcuConfig, simulate_icu
from services.sim.scenarios import parse_scenario
from streams.offline import OfflinePipeline
from streams.rules import load_rules
from tests.support.stack import Stack, unique_prefix

START = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
BEDS, SEED, DURATION_S = 8, 3, 400
SCENARIOS = (
    "hypotension:bed=1,onset=20,duration=600",
    "cerebral_desaturation:bed=2,onset=30,duration=600,severity=1.5",
    "device_disconnect:bed=3,onset=100,duration=120,device=monitor",
)
WALL_CLOCK_FIELDS = {"raised_at", "trigger_received_at"}


def simulate_args() -> list[str]:
    args = ["simulate", "--beds", str(BEDS), "--seed", str(SEED), "--duration", str(DURATION_S)]
    args += ["--start", START.strftime("%Y-%m-%dT%H:%M:%SZ"), "--no-default-scenarios"]
    for scenario in SCENARIOS:
        args += ["--scenario", scenario]
    return args


SOURCES = ("vitals", "nirs", "crrt", "labs", "context")


def through_the_broker(
    bootstrap: str, workdir: Path, speed: str, *, backlog: bool = False
) -> tuple[list[dict[str, object]], float, dict[str, tuple[float, int]]]:
    """(alert events, merge pauses, per source the records the worker took and those
    published); ``backlog``: the worker starts once all is published."""
    stack = Stack(bootstrap, workdir, unique_prefix(f"x{speed}"))
    try:
        stack.create_topics()
        if not backlog:
            stack.start_worker()
        done = stack.vigil(*simulate_args(), "--speed", speed, timeout_s=DURATION_S + 300)
        assert done.returncode == 0, done.stderr
        if backlog:
            stack.start_worker()
        published = {source: stack.published(source) for source in SOURCES}
        for source, count in published.items():
            if count:
                stack.wait_until_processed(source)
        text = scrape(stack.metrics_port)
        pauses = sum(counter(text, "vigil_worker_merge_pauses_total").values())
        samples_in = counter(text, "vigil_samples_in_total")
        taken = {s: (samples_in.get(s, 0.0), published[s]) for s in SOURCES}
        events = [AlertEvent.model_validate_json(v) for v in stack.read_all("alerts")]
    finally:
        stack.stop_all()
    return [e.model_dump(mode="json", exclude=WALL_CLOCK_FIELDS) for e in events], pauses, taken


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def counter(text: str, name: str) -> dict[str, float]:
    """A counter labelled by ``source``, per source."""
    found = re.findall(rf'^{name}\{{source="([^"]*)"\}} (\S+)$', text, re.MULTILINE)
    return {source: float(value) for source, value in found}


def without_kafka() -> list[dict[str, object]]:
    config = IcuConfig(
        beds=BEDS,
        seed=SEED,
        start=START,
        duration_s=DURATION_S,
        scenarios=tuple(parse_scenario(s) for s in SCENARIOS),
    )
    pipeline = OfflinePipeline(load_rules())
    return [
        draft.to_event(raised_at=START).model_dump(mode="json", exclude=WALL_CLOCK_FIELDS)
        for _second, records in simulate_icu(config, clock=lambda: START)
        for record in records
        for draft in pipeline.feed(record.topic, record.payload)
    ]


def summary(events: list[dict[str, object]]) -> list[tuple[object, ...]]:
    """Readable diff first: who, which rule, which phase, when."""
    return sorted(
        (e["patient_id"], e["rule_id"], e["phase"], e["triggered_at"], e["condition_since"])
        for e in events
    )


def by_patient(events: list[dict[str, object]]) -> dict[object, list[dict[str, object]]]:
    """Per patient, in order: the alerts topic keeps each patient's order, not a global one."""
    found: dict[object, list[dict[str, object]]] = {}
    for event in events:
        found.setdefault(event["patient_id"], []).append(event)
    return found


def test_real_time_and_full_speed_give_the_same_alert_events(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    expected = without_kafka()
    rules = {(e["rule_id"], e["phase"]) for e in expected}
    assert {
        ("perfusion.map_low", "start"),
        ("brain.rso2_drop_from_baseline", "start"),
        ("technical.vitals_no_data", "start"),
        ("technical.vitals_no_data", "end"),
    } <= rules
    full_speed, _, _ = through_the_broker(kafka_bootstrap, tmp_path / "max", "max")
    assert summary(full_speed) == summary(expected)
    assert by_patient(full_speed) == by_patient(expected)
    real_time, _, _ = through_the_broker(kafka_bootstrap, tmp_path / "1x", "1")
    assert summary(real_time) == summary(expected)
    assert by_patient(real_time) == by_patient(expected)


def test_a_backlog_read_through_merge_pauses_gives_the_same_alert_events(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything is published before the worker starts, and its merge may queue only 2
    records per source and partition: its reading pauses and resumes, never stalls, and
    takes every record exactly once (a pause must not drop records already fetched)."""
    monkeypatch.setenv("VIGIL_MERGE_QUEUE_MAX", "2")
    backlog, pauses, taken = through_the_broker(kafka_bootstrap, tmp_path, "max", backlog=True)
    assert pauses > 0
    assert taken == {source: (float(count), count) for source, (_, count) in taken.items()}
    expected = without_kafka()
    assert summary(backlog) == summary(expected)
    assert by_patient(backlog) == by_patient(expected)
