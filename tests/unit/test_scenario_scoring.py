"""The simulator's scenario set through the worker's pipeline, scored against its ground truth.

Writes the figures (sensitivity, time to alert, false alarms per bed-day) to
``test-artifacts/alert_scoring.json``; asserts what a clinician would demand of it:
every played clinical scenario is detected, on the organ family it concerns, and
false alarms stay far below the 187 audible alarms per bed-day of Drew 2014.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.alerts import AlertEvent
from services.evaluation import score_alerts
from services.sim.engine import IcuConfig, ground_truth, simulate_icu
from streams.offline import OfflinePipeline
from streams.rules import load_rules

START = datetime(2025, 1, 1, tzinfo=UTC)
CONFIG = IcuConfig(beds=8, seed=7, start=START, duration_s=4 * 3600)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def run() -> tuple[list[AlertEvent], dict[str, object]]:
    pipeline = OfflinePipeline(load_rules())
    alerts = [
        draft.to_event(raised_at=START)
        for _second, records in simulate_icu(CONFIG, clock=lambda: START)
        for record in records
        for draft in pipeline.feed(record.topic, record.payload)
    ]
    truth = ground_truth(CONFIG)
    scores = score_alerts(truth, alerts, beds=CONFIG.beds, run_s=CONFIG.duration_s or 0)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "alert_scoring.json").write_text(json.dumps(scores, indent=2, default=str))
    return alerts, scores


def test_every_played_clinical_scenario_is_detected_by_its_organ_family(
    run: tuple[list[AlertEvent], dict[str, object]],
) -> None:
    _alerts, scores = run
    scenarios = scores["scenarios"]
    assert isinstance(scenarios, dict)
    played = {"hypotension", "septic_shock", "venous_congestion_aki", "cerebral_desaturation"}
    assert played <= set(scenarios), scenarios
    for name, figures in scenarios.items():
        assert figures["sensitivity"] == 1.0, (name, figures)


def test_false_alarms_per_bed_day_are_far_below_the_alarm_fatigue_baseline(
    run: tuple[list[AlertEvent], dict[str, object]],
) -> None:
    _alerts, scores = run
    rate = scores["false_alarms_per_bed_day"]
    assert isinstance(rate, float)
    assert rate <= 10.0, scores["false_alarms_by_rule"]


def test_the_same_run_gives_the_same_alert_events(
    run: tuple[list[AlertEvent], dict[str, object]],
) -> None:
    alerts, _scores = run
    again = OfflinePipeline(load_rules())
    replayed = [
        draft.to_event(raised_at=START)
        for _second, records in simulate_icu(CONFIG, clock=lambda: START)
        for record in records
        for draft in again.feed(record.topic, record.payload)
    ]
    assert replayed == alerts
