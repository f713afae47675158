"""Golden scenario timeline: the alert events of a fixed simulated ICU, line by line.

A fixed plan (six beds, 3 h, seed 7, fixed start) runs through the worker's pipeline
without Kafka (``streams.offline.OfflinePipeline``): hypotension, septic shock,
venous congestion with AKI, cerebral desaturation, CRRT filter clotting, and on bed
6 a monitor disconnect and an arterial-line zeroing artefact. Every alert event it
emits (``model_dump(mode="json")`` without the wall-clock ``raised_at`` and
``trigger_received_at``) must equal the same line of
``tests/data/golden/scenario_timeline.jsonl``; a mismatch shows the first differing
event (rule, phase, patient, triggered_at) and the events after it on both sides.
Beside the file, the run itself must look clinically right: each scenario alerted by
its rule family on its own bed after onset, nothing physiological before a bed's
first onset, only technical alerts on the bed without a clinical scenario.

After an intended change of rules, features or simulator, regenerate and review::

    VIGIL_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_golden_timeline.py
    git diff tests/data/golden/scenario_timeline.jsonl
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.alerts import AlertEvent, AlertPhase
from services.sim.bed import patient_id_of
from services.sim.engine import IcuConfig, simulate_icu
from services.sim.scenarios import CLINICAL_SCENARIOS, parse_scenario
from streams.offline import OfflinePipeline
from streams.rules import load_rules
from tests.support.golden import (
    GOLDEN_DIR,
    REGENERATE_ENV,
    describe_difference,
    normalise,
    read_jsonl,
    regenerating,
    write_jsonl,
)

GOLDEN = GOLDEN_DIR / "scenario_timeline.jsonl"
START = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
PLAN = (
    "hypotension:bed=1,onset=20m,duration=10m",
    "septic_shock:bed=2,onset=15m,duration=150m",
    "venous_congestion_aki:bed=3,onset=15m,duration=8h",
    "cerebral_desaturation:bed=4,onset=40m,duration=20m,side=right",
    "crrt_filter_clotting:bed=5,onset=30m,duration=90m",
    "device_disconnect:bed=6,onset=60m,duration=5m",
    "artefact_arterial_zeroing:bed=6,onset=100m,duration=40s",
)
CONFIG = IcuConfig(
    beds=6,
    seed=7,  # no bed gets a CRRT machine it was not planned to have
    start=START,
    duration_s=3 * 3600,
    scenarios=tuple(parse_scenario(s) for s in PLAN),
)
WALL_CLOCK_FIELDS = frozenset({"raised_at", "trigger_received_at"})

FIRST_ALERTS: dict[str, tuple[str, ...]] = {
    "hypotension": ("perfusion.map_low",),
    "septic_shock": ("perfusion.map_low", "sofa.organ_worsened"),
    "venous_congestion_aki": ("congestion.cvp_rising_discontinuous_rvd",),
    "cerebral_desaturation": ("brain.rso2_drop_from_baseline",),
    "crrt_filter_clotting": ("crrt.filter_clotting_trend", "crrt.blood_pump_stopped"),
    "device_disconnect": ("technical.vitals_no_data",),
}
"""Rules each scenario must start on its bed, between onset and its end + 30 min."""
LATE_S = 1800.0


def golden_line(event: AlertEvent) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude=set(WALL_CLOCK_FIELDS))


@pytest.fixture(scope="module")
def timeline() -> list[AlertEvent]:
    pipeline = OfflinePipeline(load_rules())
    return [
        draft.to_event(raised_at=START)
        for _second, records in simulate_icu(CONFIG, clock=lambda: START)
        for record in records
        for draft in pipeline.feed(record.topic, record.payload)
    ]


def test_alert_timeline_matches_the_golden_file(timeline: list[AlertEvent]) -> None:
    actual = normalise([golden_line(e) for e in timeline])
    if regenerating():
        write_jsonl(GOLDEN, actual)
        pytest.skip(f"{REGENERATE_ENV}=1: rewrote {GOLDEN.name} ({len(actual)} events)")
    assert GOLDEN.exists(), f"no {GOLDEN}: run with {REGENERATE_ENV}=1 to create it"
    difference = describe_difference(read_jsonl(GOLDEN), actual)
    assert difference is None, (
        f"{difference}\nIf the change is intended: {REGENERATE_ENV}=1 pytest {__file__}"
    )


def _starts(timeline: list[AlertEvent], bed: int) -> list[AlertEvent]:
    patient = patient_id_of(bed)
    return [e for e in timeline if e.patient_id == patient and e.phase is AlertPhase.START]


def test_each_scenario_starts_its_alerts_on_its_own_bed_after_onset(
    timeline: list[AlertEvent],
) -> None:
    for scenario in CONFIG.plan:
        wanted = FIRST_ALERTS.get(scenario.name)
        if wanted is None:
            continue
        onset = START + timedelta(seconds=scenario.onset_s)
        until = START + timedelta(seconds=scenario.end_s + LATE_S)
        starts = _starts(timeline, scenario.bed)
        for rule in wanted:
            times = [e.triggered_at for e in starts if e.rule_id == rule]
            assert times, f"{scenario.name} on bed {scenario.bed}: no {rule} alert"
            assert onset <= times[0] <= until, (scenario.name, rule, times[0] - START)


def test_no_physiological_alert_before_a_beds_first_clinical_onset(
    timeline: list[AlertEvent],
) -> None:
    for bed in range(1, CONFIG.beds + 1):
        onsets = [s.onset_s for s in CONFIG.plan if s.bed == bed and s.name in CLINICAL_SCENARIOS]
        first = START + timedelta(seconds=min(onsets, default=CONFIG.duration_s or 0))
        early = [
            (e.rule_id, e.triggered_at - START)
            for e in _starts(timeline, bed)
            if e.kind == "physiological" and e.triggered_at < first
        ]
        assert not early, f"bed {bed}: {early}"


def test_the_bed_without_a_clinical_scenario_gets_only_its_disconnect_alarms(
    timeline: list[AlertEvent],
) -> None:
    starts = _starts(timeline, 6)
    assert {(e.kind, e.rule_id) for e in starts} == {
        ("technical", "technical.vitals_no_data"),
        ("technical", "technical.arterial_line_no_data"),
    }
    disconnect = next(s for s in CONFIG.plan if s.name == "device_disconnect")
    for event in starts:  # none for the zeroing artefact
        since = (event.triggered_at - START).total_seconds()
        assert disconnect.onset_s <= since <= disconnect.end_s + 60, (event.rule_id, since)
