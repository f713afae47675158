"""The alarm state machine (streams/alarm.py), driven by scripted feature sequences.

A bed in ICU1 whose 1-min median MAP falls: on-delay, brief crossings, gaps,
hysteresis and off-delay, escalation by time and by a worse band.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.alerts import AlertEvent, AlertPhase, AlertPriority, AlertReason
from streams.alarm import AlarmPhase, AlertContext, AlertDraft, PatientAlarms, alert_id_for
from streams.rules import RuleSet

T0 = datetime(2026, 3, 14, 2, 0, tzinfo=UTC).timestamp()
PATIENT = "MRN-0042317"
CTX = AlertContext(PATIENT, bed="ICU1-07", care_unit="ICU1", site="north")
MAP = "map_median_1min_mmhg"

MAP_LOW: dict[str, Any] = {
    "id": "perfusion.map_low",
    "version": 1,
    "title": "MAP below 65 mmHg",
    "kind": "physiological",
    "priority": "medium",
    "condition": {"feature": MAP, "op": "<", "value": 65.0, "hysteresis": 2.0},
    "on_delay_s": 300,
    "off_delay_s": 120,
    "escalation": {
        "priority": "high",
        "condition": {"feature": MAP, "op": "<", "value": 55.0},
        "on_delay_s": 120,
    },
    "reannounce_s": 0,
    "explain": ["map_mmhg", "lactate_mmol_l"],
    "source": "CLINICAL.md Perfusion: MAP < 65 for 5 min, < 55 for 2 min high (delays unverified)",
}


def ruleset(*rules: dict[str, Any]) -> RuleSet:
    return RuleSet.model_validate({"rule": list(rules or [MAP_LOW])})


RULES = ruleset()


def maps(t0: float, t1: float, value: float | None) -> list[tuple[float, dict[str, float | None]]]:
    """One 1-min median MAP per second of event time, from T0 + t0 to T0 + t1 (excluded)."""
    return [(T0 + t, {MAP: value, "map_mmhg": value}) for t in range(int(t0), int(t1))]


def run(
    script: Iterable[tuple[float, Mapping[str, float | None]]],
    rules: RuleSet = RULES,
    alarms: PatientAlarms | None = None,
) -> tuple[PatientAlarms, list[AlertDraft]]:
    alarms = alarms or PatientAlarms()
    out: list[AlertDraft] = []
    for at, features in script:
        out += alarms.evaluate(at, features, rules, CTX)
    return alarms, out


def phases(drafts: list[AlertDraft]) -> list[tuple[str, float, str]]:
    """(phase, seconds after T0, priority) of each event."""
    return [(d.phase.value, d.triggered_at - T0, d.priority.value) for d in drafts]


# --- on-delay ---------------------------------------------------------------------------


def test_start_fires_exactly_when_the_condition_has_held_for_the_on_delay() -> None:
    alarms, out = run(maps(100, 400, 61.0))
    assert out == []
    assert alarms.phase_of("perfusion.map_low") is AlarmPhase.PENDING
    assert alarms.active() == []  # pending is not shown
    alarms, out = run(maps(400, 401, 61.0), alarms=alarms)
    assert phases(out) == [("start", 400.0, "medium")]
    start = out[0]
    assert start.condition_since == T0 + 100
    assert start.sequence == 0
    assert start.reason is AlertReason.ONSET
    assert start.alert_id == alert_id_for(PATIENT, "perfusion.map_low", T0 + 100)
    assert alarms.phase_of("perfusion.map_low") is AlarmPhase.ACTIVE


def test_brief_shallow_crossings_raise_nothing() -> None:
    script = []
    for k in range(10):  # ten dips of 4 min each below 65, separated by a minute at 70
        script += maps(k * 300, k * 300 + 240, 63.0) + maps(k * 300 + 240, k * 300 + 300, 70.0)
    alarms, out = run(script)
    assert out == []
    assert alarms.phase_of("perfusion.map_low") is AlarmPhase.INACTIVE
    assert alarms.to_state()["alarms"] == {}


def test_unknown_during_pending_resets_the_on_delay() -> None:
    _, out = run(maps(0, 200, 61.0) + maps(200, 201, None) + maps(201, 600, 61.0))
    assert phases(out) == [("start", 501.0, "medium")]
    assert out[0].condition_since == T0 + 201


# --- unknown while active, off-delay, hysteresis -----------------------------------------


def test_unknown_during_active_keeps_the_alarm_active() -> None:
    alarms, out = run(maps(0, 301, 61.0) + maps(301, 301 + 3600, None))
    assert phases(out) == [("start", 300.0, "medium")]
    assert alarms.phase_of("perfusion.map_low") is AlarmPhase.ACTIVE
    assert [a.rule_id for a in alarms.active()] == ["perfusion.map_low"]


def test_clean_end_through_hysteresis_and_off_delay() -> None:
    alarms, out = run(maps(0, 301, 61.0) + maps(301, 1000, 66.0))  # inside the band 65..67
    assert phases(out) == [("start", 300.0, "medium")]
    assert alarms.phase_of("perfusion.map_low") is AlarmPhase.ACTIVE
    alarms, out = run(maps(1000, 1119, 67.0), alarms=alarms)
    assert out == []
    assert alarms.phase_of("perfusion.map_low") is AlarmPhase.CLEARING
    alarms, out = run(maps(1119, 1121, 67.0), alarms=alarms)
    assert phases(out) == [("end", 1120.0, "medium")]
    end = out[0]
    assert (end.sequence, end.reason, end.condition_since) == (1, AlertReason.RESOLVED, T0)
    assert "  map_median_1min_mmhg 67 < 67 (65 + hysteresis 2) -> false" in end.explanation
    assert "resolved for 120 s, off-delay 120 s" in end.explanation
    assert alarms.to_state()["alarms"] == {}


def test_relapse_during_off_delay_keeps_the_same_alert() -> None:
    _, out = run(
        maps(0, 301, 61.0) + maps(301, 400, 70.0) + maps(400, 450, 61.0) + maps(450, 571, 70.0)
    )
    assert phases(out) == [("start", 300.0, "medium"), ("end", 570.0, "medium")]
    assert out[0].alert_id == out[1].alert_id


def test_unknown_during_clearing_needs_a_fresh_off_delay() -> None:
    _, out = run(
        maps(0, 301, 61.0) + maps(301, 400, 70.0) + maps(400, 401, None) + maps(401, 600, 70.0)
    )
    assert phases(out) == [("start", 300.0, "medium"), ("end", 521.0, "medium")]


def test_a_new_episode_after_an_end_has_a_new_alert_id() -> None:
    _, out = run(maps(0, 301, 61.0) + maps(301, 422, 70.0) + maps(422, 723, 61.0))
    assert [d.phase.value for d in out] == ["start", "end", "start"]
    assert out[2].alert_id != out[0].alert_id
    assert out[2].sequence == 0
    assert out[2].condition_since == T0 + 422


def test_zero_delays_raise_and_clear_on_the_same_sample() -> None:
    rules = ruleset({**MAP_LOW, "on_delay_s": 0, "off_delay_s": 0, "escalation": None})
    _, out = run(maps(5, 6, 61.0) + maps(6, 7, 67.0), rules)
    assert phases(out) == [("start", 5.0, "medium"), ("end", 6.0, "medium")]


# --- escalation -------------------------------------------------------------------------


def test_worse_band_escalates_an_active_alarm_after_its_own_on_delay() -> None:
    alarms, out = run(maps(0, 400, 60.0) + maps(400, 521, 52.0))
    assert phases(out) == [("start", 300.0, "medium"), ("escalate", 520.0, "high")]
    escalate = out[1]
    assert (escalate.sequence, escalate.reason) == (1, AlertReason.BAND)
    assert escalate.thresholds == {MAP: 65.0, f"escalation:{MAP}": 55.0}
    assert "escalated to high: worse band held 120 s, on-delay 120 s" in escalate.explanation
    assert alarms.phase_of("perfusion.map_low") is AlarmPhase.ESCALATED
    assert alarms.active()[0].priority is AlertPriority.HIGH


def test_worse_band_starts_the_alarm_early_at_high_priority() -> None:
    """MAP < 55 for 2 min is high priority before the 5-min MAP < 65 delay (CLINICAL.md)."""
    alarms, out = run(maps(0, 60, 60.0) + maps(60, 600, 52.0))
    assert phases(out) == [("start", 180.0, "high")]
    assert out[0].reason is AlertReason.BAND
    assert out[0].condition_since == T0  # the episode began with MAP < 65
    assert alarms.phase_of("perfusion.map_low") is AlarmPhase.ESCALATED


def test_a_brief_dip_into_the_worse_band_does_not_escalate() -> None:
    _, out = run(maps(0, 100, 60.0) + maps(100, 200, 52.0) + maps(200, 800, 60.0))
    assert phases(out) == [("start", 300.0, "medium")]


def test_unknown_resets_the_worse_band_delay() -> None:
    _, out = run(
        maps(0, 301, 60.0) + maps(301, 400, 52.0) + maps(400, 401, None) + maps(401, 522, 52.0)
    )
    assert phases(out) == [("start", 300.0, "medium"), ("escalate", 521.0, "high")]


def test_escalation_by_time_after_the_start() -> None:
    rules = ruleset({**MAP_LOW, "escalation": {"priority": "high", "after_s": 900}})
    _, out = run(maps(0, 1300, 62.0), rules)
    assert phases(out) == [("start", 300.0, "medium"), ("escalate", 1200.0, "high")]
    assert out[1].reason is AlertReason.DURATION
    assert "escalated to high: still active 900 s, escalation after 900 s" in out[1].explanation


def test_escalation_is_kept_until_the_episode_ends() -> None:
    _, out = run(
        maps(0, 60, 60.0) + maps(60, 300, 52.0) + maps(300, 900, 60.0) + maps(900, 1021, 70.0)
    )
    assert phases(out) == [("start", 180.0, "high"), ("end", 1020.0, "high")]


# --- what the events carry --------------------------------------------------------------


def test_start_event_carries_values_thresholds_and_a_rule_trace() -> None:
    script = [(at, {**f, "lactate_mmol_l": 3.1}) for at, f in maps(0, 301, 61.0)]
    _, out = run(script)
    start = out[0]
    assert start.values == {MAP: 61.0, "map_mmhg": 61.0, "lactate_mmol_l": 3.1}
    assert start.thresholds == {MAP: 65.0, f"escalation:{MAP}": 55.0}
    assert (start.rule_id, start.rule_version, start.kind) == (
        "perfusion.map_low",
        1,
        "physiological",
    )
    assert start.explanation == (
        "MAP below 65 mmHg: condition true since 2026-03-14T02:00:00Z",
        "  map_median_1min_mmhg 61 < 65 -> true",
        "held 300 s, on-delay 300 s",
        f"rule perfusion.map_low v1; source: {MAP_LOW['source']}",
    )


def test_to_event_makes_a_valid_self_contained_alert_event() -> None:
    received = datetime.fromtimestamp(T0 + 300.2, UTC)
    alarms = PatientAlarms()
    ctx = AlertContext(
        PATIENT, bed="ICU1-07", care_unit="ICU1", site="north", trigger_received_at=received
    )
    out: list[AlertDraft] = []
    for at, features in maps(0, 301, 61.0):
        out += alarms.evaluate(at, features, RULES, ctx)
    raised = received + timedelta(milliseconds=35)
    event = out[0].to_event(raised)
    assert isinstance(event, AlertEvent)
    assert event.phase is AlertPhase.START
    assert (event.patient_id, event.bed, event.care_unit, event.site) == (
        PATIENT,
        "ICU1-07",
        "ICU1",
        "north",
    )
    assert event.triggered_at == datetime.fromtimestamp(T0 + 300, UTC)
    assert event.condition_since == datetime.fromtimestamp(T0, UTC)
    assert event.raised_at - event.trigger_received_at == timedelta(milliseconds=35)  # type: ignore[operator]
    assert event.reason is AlertReason.ONSET
    assert AlertEvent.model_validate_json(event.model_dump_json()) == event


def test_technical_rules_emit_technical_alerts() -> None:
    rule = {
        **MAP_LOW,
        "id": "technical.vitals_no_data",
        "kind": "technical",
        "title": "No vital signs for over 60 s",
        "condition": {"feature": "vitals_data_age_s", "op": ">", "value": 60},
        "on_delay_s": 0,
        "off_delay_s": 0,
        "escalation": None,
        "explain": [],
    }
    _, out = run(
        [(T0 + 61, {"vitals_data_age_s": 61.0}), (T0 + 62, {"vitals_data_age_s": 1.0})],
        ruleset(rule),
    )
    assert [(d.phase.value, d.kind) for d in out] == [("start", "technical"), ("end", "technical")]
