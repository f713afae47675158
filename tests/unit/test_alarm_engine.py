"""The per-patient alarm engine (streams/alarm.py): reminders, acknowledgements, latching,
rules changing under a running alarm, determinism and state that survives a restart."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.alerts import AlertAck, AlertPhase, AlertPriority, AlertReason
from streams.alarm import (
    AlarmPhase,
    AlertContext,
    AlertDraft,
    PatientAlarms,
    alert_id_for,
    event_id_for,
)
from streams.rules import RuleSet, load_rules

T0 = datetime(2026, 3, 14, 2, 0, tzinfo=UTC).timestamp()
PATIENT = "MRN-0042317"
CTX = AlertContext(PATIENT, bed="ICU1-07", care_unit="ICU1", site="north")
MAP = "map_median_1min_mmhg"
SOURCE = "CLINICAL.md Perfusion: MAP < 65 for 5 min, < 55 for 2 min high (delays unverified)"

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
    "source": SOURCE,
}
LACTATE: dict[str, Any] = {
    "id": "perfusion.lactate_high",
    "version": 1,
    "title": "Lactate above 2 mmol/L",
    "kind": "physiological",
    "priority": "medium",
    "condition": {"feature": "lactate_mmol_l", "op": ">", "value": 2.0},
    "on_delay_s": 0,
    "off_delay_s": 0,
    "source": "CLINICAL.md Perfusion: lactate > 2 mmol/L",
}
MAP_ALERT = alert_id_for(PATIENT, "perfusion.map_low", T0)  # MAP low from T0 in most tests


def ruleset(*rules: dict[str, Any]) -> RuleSet:
    """Rules with the default reminder intervals (high 120 s, medium 600 s, low none)."""
    return RuleSet.model_validate({"rule": list(rules or [MAP_LOW])})


RULES = ruleset()
LATCHING = ruleset({**MAP_LOW, "latching": True})

Script = list[tuple[float, dict[str, float | None]]]


def maps(t0: float, t1: float, value: float | None) -> Script:
    return [(T0 + t, {MAP: value}) for t in range(int(t0), int(t1))]


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


def ack(
    action: str = "acknowledge",
    at: float = 400.0,
    *,
    ack_id: str | None = None,
    alert_id: str = MAP_ALERT,
    role: str = "clinician",
    silence_until: float | None = None,
    patient_id: str = PATIENT,
) -> AlertAck:
    return AlertAck.model_validate(
        {
            "ack_id": ack_id or f"ack-{action}-{at:g}",
            "alert_id": alert_id,
            "patient_id": patient_id,
            "action": action,
            "user": "rn.jdoe",
            "role": role,
            "at": datetime.fromtimestamp(T0 + at, UTC),
            "silence_until": None
            if silence_until is None
            else datetime.fromtimestamp(T0 + silence_until, UTC),
            "comment": "norepinephrine titrated up",
        }
    )


def timeline(drafts: list[AlertDraft]) -> list[tuple[str, str, float, str]]:
    """(phase, reason, seconds after T0, priority) of each event."""
    return [
        (d.phase.value, d.reason.value, round(d.triggered_at - T0, 3), d.priority.value)
        for d in drafts
    ]


# --- reminders ---------------------------------------------------------------------------


def test_an_unacknowledged_alarm_is_reannounced_every_interval_of_event_time() -> None:
    _, out = run(maps(0, 1600, 61.0))
    assert timeline(out) == [
        ("start", "onset", 300, "medium"),
        ("update", "reminder", 900, "medium"),
        ("update", "reminder", 1500, "medium"),
    ]
    assert [d.sequence for d in out] == [0, 1, 2]
    assert len({d.event_id for d in out}) == 3
    assert out[1].explanation[0] == (
        "reminder: MAP below 65 mmHg active since 2026-03-14T02:05:00Z,"
        " not acknowledged (every 600 s)"
    )


def test_low_priority_alarms_have_no_reminders_by_default() -> None:
    _, out = run(maps(0, 4000, 61.0), ruleset({**MAP_LOW, "priority": "low"}))
    assert timeline(out) == [("start", "onset", 300, "low")]


def test_acknowledge_pauses_reminders_until_the_alarm_escalates() -> None:
    alarms, out = run(maps(0, 400, 61.0))
    result = alarms.acknowledge(ack("acknowledge", 400), RULES, CTX)
    assert result.status == "applied"
    assert result.applied
    assert timeline(list(result.drafts)) == [("update", "acknowledge", 400, "medium")]
    update = result.drafts[0]
    assert (update.acknowledged_by, update.acknowledged_at) == ("rn.jdoe", T0 + 400)
    assert update.event_id == event_id_for(MAP_ALERT, 1, AlertPhase.UPDATE, "ack-acknowledge-400")
    assert "comment: norepinephrine titrated up" in update.explanation
    alarms, out = run(maps(400, 1500, 61.0) + maps(1500, 1900, 52.0), alarms=alarms)
    assert timeline(out) == [
        ("escalate", "band", 1620, "high"),  # ack cleared: reminders again, high interval
        ("update", "reminder", 1740, "high"),
        ("update", "reminder", 1860, "high"),
    ]
    assert out[0].acknowledged_by is None


def test_acknowledge_never_ends_or_hides_the_alarm() -> None:
    alarms, _ = run(maps(0, 400, 61.0))
    alarms.acknowledge(ack(), RULES, CTX)
    (shown,) = alarms.active()
    assert (shown.alert_id, shown.phase, shown.acknowledged_by) == (
        MAP_ALERT,
        AlarmPhase.ACTIVE,
        "rn.jdoe",
    )
    alarms, out = run(maps(400, 3000, 61.0) + maps(3000, 3121, 70.0), alarms=alarms)
    assert timeline(out) == [("end", "resolved", 3120, "medium")]
    assert out[0].acknowledged_by == "rn.jdoe"


def test_silence_pauses_reminders_until_silence_until_only() -> None:
    alarms, _ = run(maps(0, 400, 61.0))
    result = alarms.acknowledge(ack("silence", 400, silence_until=2000), RULES, CTX)
    assert result.drafts[0].silenced_until == T0 + 2000
    assert result.drafts[0].reason is AlertReason.SILENCE
    _, out = run(maps(400, 2700, 61.0), alarms=alarms)
    assert timeline(out) == [
        ("update", "reminder", 2000, "medium"),
        ("update", "reminder", 2600, "medium"),
    ]
    assert out[0].silenced_until is None


def test_unsilence_lifts_a_silence() -> None:
    alarms, _ = run(maps(0, 400, 61.0))
    alarms.acknowledge(ack("silence", 400, silence_until=5000), RULES, CTX)
    alarms, out = run(maps(400, 1000, 61.0), alarms=alarms)
    assert out == []
    result = alarms.acknowledge(ack("unsilence", 1000), RULES, CTX)
    assert timeline(list(result.drafts)) == [("update", "unsilence", 1000, "medium")]
    _, out = run(maps(1000, 1002, 61.0), alarms=alarms)
    assert timeline(out) == [("update", "reminder", 1000, "medium")]


def test_a_silence_without_an_end_acts_as_an_acknowledgement() -> None:
    alarms, _ = run(maps(0, 400, 61.0))
    result = alarms.acknowledge(ack("silence", 400), RULES, CTX)
    assert result.drafts[0].acknowledged_by == "rn.jdoe"
    _, out = run(maps(400, 3000, 61.0), alarms=alarms)
    assert out == []


# --- acknowledgements that change nothing ------------------------------------------------


def test_an_ack_for_an_unknown_or_ended_alert_changes_nothing() -> None:
    alarms, _ = run(maps(0, 400, 61.0))
    before = json.dumps(alarms.to_state())
    assert alarms.acknowledge(ack(alert_id="no-such-alert"), RULES, CTX).status == "unknown_alert"
    other_bed = ack(patient_id="MRN-9999999")
    assert alarms.acknowledge(other_bed, RULES, CTX).status == "unknown_alert"
    assert json.dumps(alarms.to_state()) == before
    alarms, out = run(maps(400, 521, 70.0), alarms=alarms)
    assert [d.phase for d in out] == [AlertPhase.END]
    result = alarms.acknowledge(ack(at=600), RULES, CTX)
    assert (result.status, result.drafts, result.applied) == ("unknown_alert", (), False)


def test_a_pending_alarm_cannot_be_acknowledged() -> None:
    alarms, _ = run(maps(0, 200, 61.0))
    assert alarms.acknowledge(ack(at=200), RULES, CTX).status == "unknown_alert"


def test_a_redelivered_ack_changes_nothing() -> None:
    alarms, _ = run(maps(0, 400, 61.0))
    first = alarms.acknowledge(ack(ack_id="ack-7f3a"), RULES, CTX)
    state = json.dumps(alarms.to_state())
    again = alarms.acknowledge(ack(ack_id="ack-7f3a"), RULES, CTX)
    assert first.status == "applied"
    assert (again.status, again.drafts) == ("duplicate", ())
    assert json.dumps(alarms.to_state()) == state


def test_a_viewer_cannot_acknowledge() -> None:
    alarms, _ = run(maps(0, 400, 61.0))
    assert alarms.acknowledge(ack(role="viewer"), RULES, CTX).status == "not_permitted"
    assert alarms.active()[0].acknowledged_by is None


# --- latching ----------------------------------------------------------------------------


def test_a_latching_alarm_stays_shown_after_resolving_until_acknowledged() -> None:
    alarms, out = run(maps(0, 400, 61.0) + maps(400, 1200, 70.0), LATCHING)
    assert timeline(out) == [
        ("start", "onset", 300, "medium"),
        ("update", "latched", 520, "medium"),
        ("update", "reminder", 1120, "medium"),  # still unacknowledged
    ]
    assert out[1].latched
    assert [(a.alert_id, a.phase) for a in alarms.active()] == [(MAP_ALERT, AlarmPhase.LATCHED)]
    result = alarms.acknowledge(ack(at=1200), LATCHING, CTX)
    assert timeline(list(result.drafts)) == [
        ("update", "acknowledge", 1200, "medium"),
        ("end", "resolved", 1200, "medium"),
    ]
    assert [d.sequence for d in result.drafts] == [3, 4]
    assert alarms.active() == []
    assert alarms.to_state()["alarms"] == {}


def test_a_latching_alarm_acknowledged_while_active_ends_at_its_off_delay() -> None:
    alarms, _ = run(maps(0, 400, 61.0), LATCHING)
    alarms.acknowledge(ack(), LATCHING, CTX)
    _, out = run(maps(400, 600, 70.0), LATCHING, alarms)
    assert timeline(out) == [("end", "resolved", 520, "medium")]


def test_an_escalation_after_the_ack_makes_a_latching_alarm_latch_again() -> None:
    alarms, _ = run(maps(0, 400, 61.0), LATCHING)
    alarms.acknowledge(ack(), LATCHING, CTX)
    script = maps(400, 600, 52.0) + maps(600, 800, 70.0)
    _, out = run(script, LATCHING, alarms)
    assert timeline(out) == [("escalate", "band", 520, "high"), ("update", "latched", 720, "high")]


def test_a_latched_alarm_whose_condition_returns_is_active_again_with_the_same_id() -> None:
    alarms, out = run(maps(0, 400, 61.0) + maps(400, 600, 70.0) + maps(600, 700, 61.0), LATCHING)
    assert timeline(out) == [
        ("start", "onset", 300, "medium"),
        ("update", "latched", 520, "medium"),
        ("update", "relapsed", 600, "medium"),
    ]
    assert {d.alert_id for d in out} == {MAP_ALERT}
    assert alarms.phase_of("perfusion.map_low") is AlarmPhase.ACTIVE


# --- rules changing under a running alarm ------------------------------------------------


def test_a_removed_rule_ends_its_alarm_at_the_next_evaluation() -> None:
    both = ruleset(MAP_LOW, LACTATE)
    lactate_only = ruleset(LACTATE)
    alarms, out = run(maps(0, 301, 61.0), both)
    assert [d.phase for d in out] == [AlertPhase.START]
    alarms, out = run([(T0 + 301, {MAP: 61.0, "lactate_mmol_l": 1.2})], lactate_only, alarms)
    assert timeline(out) == [("end", "rule_removed", 301, "medium")]
    assert out[0].alert_id == MAP_ALERT
    assert out[0].explanation[0] == (
        "rule perfusion.map_low was removed from the rules file or disabled: its alarm ends"
    )
    assert out[0].source == SOURCE
    assert alarms.active() == []


def test_a_disabled_rule_ends_its_alarm_and_a_pending_one_vanishes_silently() -> None:
    alarms, _ = run(maps(0, 301, 61.0), ruleset(MAP_LOW, LACTATE))
    alarms, _ = run([(T0 + 301, {"lactate_mmol_l": 2.5})], ruleset(MAP_LOW, LACTATE), alarms)
    assert {a.rule_id for a in alarms.active()} == {"perfusion.map_low", "perfusion.lactate_high"}
    disabled = ruleset(MAP_LOW, {**LACTATE, "enabled": False})
    alarms, out = run([(T0 + 302, {MAP: 61.0, "lactate_mmol_l": 2.5})], disabled, alarms)
    assert [(d.rule_id, d.phase.value) for d in out] == [("perfusion.lactate_high", "end")]
    # a pending alarm of a removed rule never announced anything: it just goes
    pending, _ = run(maps(0, 100, 61.0))
    _, out = run([(T0 + 100, {"lactate_mmol_l": 1.0})], ruleset(LACTATE), pending)
    assert out == []
    assert pending.phase_of("perfusion.map_low") is AlarmPhase.INACTIVE


def test_a_new_rule_version_keeps_the_episode_and_its_alert_id() -> None:
    v2 = ruleset({**MAP_LOW, "version": 2, "title": "MAP below 65 mmHg (site v2)"})
    alarms, out = run(maps(0, 400, 61.0))
    alarms, later = run(maps(400, 1000, 61.0) + maps(1000, 1121, 70.0), v2, alarms)
    assert [(d.phase.value, d.rule_version, d.title) for d in out + later] == [
        ("start", 1, "MAP below 65 mmHg"),
        ("update", 2, "MAP below 65 mmHg (site v2)"),
        ("end", 2, "MAP below 65 mmHg (site v2)"),
    ]
    assert {d.alert_id for d in out + later} == {MAP_ALERT}


# --- engine housekeeping -----------------------------------------------------------------


def test_an_evaluation_earlier_than_the_last_is_ignored_and_counted() -> None:
    alarms, _ = run(maps(0, 301, 61.0))
    assert alarms.evaluate(T0 + 10, {MAP: 80.0}, RULES, CTX) == []
    assert alarms.stale_evaluations == 1
    assert alarms.evaluate(T0 + 301, {MAP: 61.0}, RULES, CTX) == []  # same time is fine
    assert alarms.stale_evaluations == 1


def test_active_lists_the_most_urgent_first() -> None:
    rules = ruleset(MAP_LOW, {**LACTATE, "priority": "low"})
    script = [(T0 + t, {MAP: 52.0, "lactate_mmol_l": 2.4}) for t in range(0, 200)]
    alarms, _ = run(script, rules)
    assert [(a.rule_id, a.priority) for a in alarms.active()] == [
        ("perfusion.map_low", AlertPriority.HIGH),
        ("perfusion.lactate_high", AlertPriority.LOW),
    ]


def test_state_of_an_unknown_layout_is_refused() -> None:
    state = PatientAlarms().to_state()
    with pytest.raises(ValueError, match="unknown alarm state version"):
        PatientAlarms.from_state({**state, "state_version": 99})


# --- determinism and restarts ------------------------------------------------------------

Step = tuple[str, float, Any]


def septic_night() -> list[Step]:
    """MAP falls, a worse band, lactate rises, a silence (re-delivered), a gap, recovery
    into a latched alarm, its acknowledgement, a stray ack, then a new episode."""
    steps: list[Step] = []
    map_alert = alert_id_for(PATIENT, "perfusion.map_low", T0 + 200)

    def vitals(t0: int, t1: int, map_mmhg: float | None, lactate: float | None) -> None:
        for t in range(t0, t1, 5):
            steps.append(("eval", t, {MAP: map_mmhg, "lactate_mmol_l": lactate}))

    silence = ack("silence", 700, alert_id=map_alert, silence_until=1500)
    vitals(0, 200, 70.0, None)
    vitals(200, 700, 61.0, 2.6)  # lactate starts at 200, MAP at 500
    steps.append(("ack", 700, silence))
    vitals(700, 1100, 61.0, 2.6)
    vitals(1100, 1400, 52.0, 4.4)  # escalates at 1220 (lactate too, at once)
    steps.append(("ack", 1400, silence))  # re-delivered: nothing
    vitals(1400, 1500, None, None)  # gap: nothing clears
    vitals(1500, 2400, 68.0, 1.8)  # resolves: MAP latches at 1620, lactate ends
    steps.append(("ack", 2400, ack("acknowledge", 2400, alert_id=map_alert)))
    steps.append(("ack", 2400, ack("acknowledge", 2401, alert_id="no-such-alert")))
    vitals(2400, 3000, 60.0, 1.8)  # a new MAP episode starts at 2700
    return steps


def replay(steps: list[Step], restart_every_step: bool) -> list[AlertDraft]:
    rules = ruleset({**MAP_LOW, "latching": True}, LACTATE)
    alarms = PatientAlarms()
    out: list[AlertDraft] = []
    for kind, t, payload in steps:
        if restart_every_step:
            alarms = PatientAlarms.from_state(json.loads(json.dumps(alarms.to_state())))
        if kind == "eval":
            out += alarms.evaluate(T0 + t, payload, rules, CTX)
        else:
            out += alarms.acknowledge(payload, rules, CTX).drafts
    return out


def test_the_same_inputs_give_identical_events() -> None:
    first, second = replay(septic_night(), False), replay(septic_night(), False)
    assert first == second
    raised = datetime(2026, 3, 14, 3, 0, tzinfo=UTC)
    assert [d.to_event(raised) for d in first] == [d.to_event(raised) for d in second]
    assert len({d.event_id for d in first}) == len(first)
    assert [(d.rule_id, d.phase.value, d.reason.value, d.triggered_at - T0) for d in first] == [
        ("perfusion.lactate_high", "start", "onset", 200),
        ("perfusion.map_low", "start", "onset", 500),
        ("perfusion.map_low", "update", "silence", 700),
        ("perfusion.lactate_high", "update", "reminder", 800),
        ("perfusion.map_low", "escalate", "band", 1220),  # the escalation ends the silence
        ("perfusion.map_low", "update", "reminder", 1340),
        ("perfusion.lactate_high", "update", "reminder", 1400),
        ("perfusion.map_low", "update", "reminder", 1460),
        ("perfusion.lactate_high", "end", "resolved", 1500),
        ("perfusion.map_low", "update", "latched", 1620),
        *[("perfusion.map_low", "update", "reminder", t) for t in range(1740, 2400, 120)],
        ("perfusion.map_low", "update", "acknowledge", 2400),
        ("perfusion.map_low", "end", "resolved", 2400),
        ("perfusion.map_low", "start", "onset", 2700),
    ]


def test_state_round_tripped_through_json_at_every_step_changes_nothing() -> None:
    assert replay(septic_night(), True) == replay(septic_night(), False)


# --- the packaged default rules ------------------------------------------------------------


def test_default_rules_raise_nothing_on_unknown_data() -> None:
    rules = load_rules()
    alarms = PatientAlarms()
    out = [
        d
        for t in range(0, 3600, 10)
        for d in alarms.evaluate(
            T0 + t, {name: None for name in ("map_median_1min_mmhg", "lactate_mmol_l")}, rules, CTX
        )
    ]
    assert out == []


def test_default_rules_on_a_septic_shock_patient() -> None:
    rules = load_rules()
    alarms = PatientAlarms()
    out: list[AlertDraft] = []
    for t in range(0, 900, 5):
        features: dict[str, float | None] = {
            "map_median_1min_mmhg": 60.0 if t < 400 else 53.0,
            "map_mmhg": 60.0,
            "lactate_mmol_l": 4.6,
            "vitals_data_age_s": 1.0,
            "arterial_line_data_age_s": 1.0,
            "nbp_map_low_count": 0.0,
        }
        out += alarms.evaluate(T0 + t, features, rules, CTX)
    announced = [(d.rule_id, *t) for d, t in zip(out, timeline(out), strict=True)]
    assert [a for a in announced if a[2] != "reminder"] == [
        ("perfusion.lactate_high", "start", "band", 0, "high"),  # lactate >= 4: severe at once
        ("perfusion.map_low", "start", "onset", 300, "medium"),  # MAP < 65 for 5 min
        ("perfusion.map_low", "escalate", "band", 520, "high"),  # MAP < 55 for 2 min
    ]
    reminders = [(a[0], a[3]) for a in announced if a[2] == "reminder"]
    assert [t for rule, t in reminders if rule == "perfusion.lactate_high"] == list(
        range(300, 900, 300)
    )
    assert [t for rule, t in reminders if rule == "perfusion.map_low"] == [820]
    for draft in out:
        event = draft.to_event(datetime(2026, 3, 14, 3, 0, tzinfo=UTC))
        assert event.source.startswith("CLINICAL.md")
