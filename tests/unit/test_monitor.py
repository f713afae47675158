"""PatientMonitor: the perfusion rule on scripted patients, in event time."""

from __future__ import annotations

import json

from schemas.alerts import AlertEvent, AlertPhase, AlertPriority
from schemas.codes import Quantity
from schemas.observations import Measurement, VitalSigns
from streams.monitor import PatientMonitor
from streams.rules import RuleSet, load_rules
from tests.support.patients import (
    T0,
    first_time_median_at_or_above_after,
    first_time_median_below,
    map_trace,
    seconds,
    vitals,
)

RULES = load_rules()
ON_DELAY, OFF_DELAY = 300, 120


def feed(trace: list[float], patient: str = "p-hypo", rules: RuleSet = RULES) -> list[AlertEvent]:
    monitor = PatientMonitor()
    events = []
    for t, map_mmhg in enumerate(trace):
        for draft in monitor.on_vitals(vitals(patient, T0 + seconds(t), map_mmhg), rules):
            events.append(draft.to_event(raised_at=T0 + seconds(t)))
    return events


HYPOTENSION = map_trace([(600, 82), (900, 56), (900, 80)])


def test_hypotension_starts_five_minutes_after_the_median_crosses_and_ends_after_off_delay() -> (
    None
):
    events = feed(HYPOTENSION)
    assert [(e.phase, e.priority) for e in events] == [
        (AlertPhase.START, AlertPriority.MEDIUM),
        (AlertPhase.END, AlertPriority.MEDIUM),
    ]
    start, end = events
    crossed = first_time_median_below(HYPOTENSION, 65)
    assert 600 <= crossed <= 640
    assert start.condition_since == T0 + seconds(crossed)
    assert start.triggered_at == T0 + seconds(crossed + ON_DELAY)
    recovered = first_time_median_at_or_above_after(HYPOTENSION, 65, after=1500)
    assert end.triggered_at == T0 + seconds(recovered + OFF_DELAY)
    assert start.alert_id == end.alert_id
    assert start.event_id != end.event_id
    assert start.values["map_median_1min_mmhg"] is not None
    assert start.values["map_median_1min_mmhg"] < 65
    assert start.thresholds == {"map_median_1min_mmhg": 65.0}
    assert any("on-delay 300" in line for line in start.explanation)
    assert "CLINICAL.md" in start.source


def test_brief_shallow_dips_raise_nothing() -> None:
    # three 4-minute dips to 60 mmHg: each shorter than the on-delay
    trace = map_trace([(300, 80), (240, 60), (300, 80), (240, 60), (300, 80), (240, 60), (300, 80)])
    assert feed(trace) == []


def test_flush_artefacts_and_single_spikes_do_not_break_the_episode() -> None:
    trace = list(HYPOTENSION)
    for t in range(700, 1400, 37):
        trace[t] = 180.0  # arterial line flush: a few isolated high values
    events = feed(trace)
    assert [e.phase for e in events] == [AlertPhase.START, AlertPhase.END]


def test_normal_patient_never_alarms() -> None:
    assert feed(map_trace([(3600, 78)], seed=5, noise=3)) == []


def test_ids_are_deterministic_across_runs_and_differ_between_patients() -> None:
    first, second = feed(HYPOTENSION), feed(HYPOTENSION)
    assert [e.model_dump(exclude={"raised_at"}) for e in first] == [
        e.model_dump(exclude={"raised_at"}) for e in second
    ]
    other = feed(HYPOTENSION, patient="p-other")
    assert {e.alert_id for e in other}.isdisjoint({e.alert_id for e in first})


def test_late_and_duplicate_samples_are_ignored_and_counted() -> None:
    monitor = PatientMonitor()
    for t in range(10):
        monitor.on_vitals(vitals("p1", T0 + seconds(t), 80), RULES)
    before = monitor.to_state()
    assert monitor.on_vitals(vitals("p1", T0 + seconds(9), 40), RULES) == []  # duplicate time
    assert monitor.on_vitals(vitals("p1", T0 + seconds(3), 40), RULES) == []  # late
    assert monitor.late_samples == 2
    after = monitor.to_state()
    assert after.pop("late_samples") == 2
    before.pop("late_samples")
    assert after == before


def test_artefact_flagged_map_is_not_used() -> None:
    monitor = PatientMonitor()
    for t in range(900):
        drafts = monitor.on_vitals(vitals("p1", T0 + seconds(t), 30, artefact=True), RULES)
        assert drafts == []
    assert len(monitor.map_median) == 0


def test_data_gap_longer_than_the_window_restarts_the_on_delay() -> None:
    # 4 min low, 2 min without MAP, 4 min low: never 5 continuous minutes of evidence
    trace: list[float | None] = [56.0] * 240 + [None] * 120 + [56.0] * 240
    monitor = PatientMonitor()
    events = []
    for t, value in enumerate(trace):
        events += monitor.on_vitals(vitals("p1", T0 + seconds(t), value), RULES)
    assert events == []


def test_active_alarm_is_not_cleared_by_missing_data() -> None:
    trace: list[float | None] = [56.0] * 420 + [None] * 600
    monitor = PatientMonitor()
    phases = []
    for t, value in enumerate(trace):
        phases += [
            d.transition.phase
            for d in monitor.on_vitals(vitals("p1", T0 + seconds(t), value), RULES)
        ]
    assert phases == ["start"]
    assert monitor.alarms["perfusion.map_low"].phase.value == "active"


def test_state_restored_mid_episode_continues_identically() -> None:
    """What a restarted worker does: state from the changelog (JSON), then more samples."""
    uninterrupted = feed(HYPOTENSION)
    monitor = PatientMonitor()
    events = []
    for t, map_mmhg in enumerate(HYPOTENSION):
        if t in (650, 1000, 1700):  # restart while pending, active and clearing
            monitor = PatientMonitor.from_state(json.loads(json.dumps(monitor.to_state())))
        for draft in monitor.on_vitals(vitals("p-hypo", T0 + seconds(t), map_mmhg), RULES):
            events.append(draft.to_event(raised_at=T0 + seconds(t)))
    assert events == uninterrupted


def _split_gateway_messages(t: int, map_mmhg: float) -> list[VitalSigns]:
    """A PCD-01 gateway sending HR/SpO2 and the arterial pressures as two messages."""
    at = T0 + seconds(t)
    full = vitals("p-split", at, map_mmhg)
    return [
        full.model_copy(update={"measurements": full.measurements[:2]}),
        full.model_copy(update={"measurements": full.measurements[2:]}),
        VitalSigns(
            patient_id="p-split",
            source=full.source,
            received_at=at,
            measurements=(Measurement.of(Quantity.RESP_RATE, 18, at),),
        ),
    ]


def test_several_messages_in_the_same_second_do_not_hide_the_arterial_pressure() -> None:
    monitor = PatientMonitor()
    phases = []
    for t, map_mmhg in enumerate(HYPOTENSION):
        for message in _split_gateway_messages(t, map_mmhg):
            phases += [d.transition.phase for d in monitor.on_vitals(message, RULES)]
    assert phases == ["start", "end"]
    assert monitor.late_samples == 0


def test_cuff_pressure_alone_is_not_evaluated_by_the_continuous_map_rule() -> None:
    monitor = PatientMonitor()
    for t in range(0, 3 * 3600, 60):  # NBP every minute at 50 mmHg for 3 h
        at = T0 + seconds(t)
        cuff = vitals("p-nbp", at, None).model_copy(
            update={"measurements": (Measurement.of(Quantity.NBP_MEAN, 50, at),)}
        )
        assert monitor.on_vitals(cuff, RULES) == []
    assert len(monitor.map_median) == 0


def test_a_gap_of_exactly_one_window_is_unknown() -> None:
    # 4 min 59 s low, one 60 s gap, then low again: the on-delay restarts after the gap
    trace: list[float | None] = [56.0] * 299 + [None] * 59 + [56.0] * 299
    monitor = PatientMonitor()
    events = []
    for t, value in enumerate(trace):
        events += monitor.on_vitals(vitals("p1", T0 + seconds(t), value), RULES)
    assert events == []
