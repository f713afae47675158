"""PatientState: every raw topic merged in event time; the MAP rule on scripted patients."""

from __future__ import annotations

import json
import pickle
from datetime import timedelta

from schemas.alerts import AlertEvent, AlertPhase, AlertPriority
from schemas.codes import Quantity
from schemas.common import SourceInfo
from schemas.context import Discharge, Weight
from schemas.derived import RiskScore
from schemas.observations import Measurement, NirsSample
from streams.alarm import AlertDraft
from streams.patient import FEATURE_SOURCES, PatientState
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
MAP_RULE = "perfusion.map_low"
ON_DELAY, OFF_DELAY = 300, 120
CLEAR_AT = RULES.get(MAP_RULE).condition.threshold(cleared=True)  # type: ignore[union-attr]


def _events(drafts: list[AlertDraft], t: int) -> list[AlertEvent]:
    return [d.to_event(raised_at=T0 + seconds(t)) for d in drafts]


def feed(
    trace: list[float | None],
    patient: str = "p-hypo",
    rules: RuleSet = RULES,
    rule_id: str | None = MAP_RULE,
) -> list[AlertEvent]:
    state = PatientState(patient)
    events = []
    for t, map_mmhg in enumerate(trace):
        events += _events(
            state.apply_observations("vitals", vitals(patient, T0 + seconds(t), map_mmhg), rules), t
        )
    return [e for e in events if rule_id is None or e.rule_id == rule_id]


HYPOTENSION = map_trace([(600, 82), (900, 56), (900, 80)])


def test_hypotension_starts_five_minutes_after_the_median_crosses_and_ends_after_off_delay() -> (
    None
):
    events = feed(list(HYPOTENSION))
    assert [(e.phase, e.priority) for e in events] == [
        (AlertPhase.START, AlertPriority.MEDIUM),
        (AlertPhase.END, AlertPriority.MEDIUM),
    ]
    start, end = events
    crossed = first_time_median_below(HYPOTENSION, 65)
    assert 600 <= crossed <= 640
    assert start.condition_since == T0 + seconds(crossed)
    assert start.triggered_at == T0 + seconds(crossed + ON_DELAY)
    recovered = first_time_median_at_or_above_after(HYPOTENSION, CLEAR_AT, after=1500)
    assert end.triggered_at == T0 + seconds(recovered + OFF_DELAY)
    assert start.alert_id == end.alert_id != start.event_id
    assert start.values["map_median_1min_mmhg"] is not None
    assert start.values["map_median_1min_mmhg"] < 65
    assert start.thresholds["map_median_1min_mmhg"] == 65.0
    assert "CLINICAL.md" in start.source


def test_a_deep_drop_is_high_priority_after_two_minutes() -> None:
    trace = map_trace([(600, 82), (600, 48), (600, 80)])
    events = feed(list(trace))
    start = events[0]
    assert start.phase is AlertPhase.START
    assert start.priority is AlertPriority.HIGH
    crossed = first_time_median_below(trace, 55)
    assert start.triggered_at == T0 + seconds(crossed + 120)


def test_brief_shallow_dips_raise_nothing() -> None:
    trace = map_trace([(300, 80), (240, 60), (300, 80), (240, 60), (300, 80), (240, 60), (300, 80)])
    assert feed(list(trace), rule_id=None) == []


def test_flush_artefacts_and_single_spikes_do_not_break_the_episode() -> None:
    trace = list(HYPOTENSION)
    for t in range(700, 1400, 37):
        trace[t] = 180.0
    assert [e.phase for e in feed(list(trace))] == [AlertPhase.START, AlertPhase.END]


def test_normal_patient_never_alarms() -> None:
    assert feed(list(map_trace([(3600, 78)], seed=5, noise=3)), rule_id=None) == []


def test_ids_are_deterministic_and_differ_between_patients() -> None:
    first, second = feed(list(HYPOTENSION)), feed(list(HYPOTENSION))
    assert [e.model_dump(exclude={"raised_at"}) for e in first] == [
        e.model_dump(exclude={"raised_at"}) for e in second
    ]
    other = feed(list(HYPOTENSION), patient="p-other")
    assert {e.alert_id for e in other}.isdisjoint({e.alert_id for e in first})


def test_late_and_duplicate_samples_are_ignored_and_counted() -> None:
    state = PatientState("p1")
    for t in range(10):
        state.apply_observations("vitals", vitals("p1", T0 + seconds(t), 80), RULES)
    before = state.to_state()
    assert state.apply_observations("vitals", vitals("p1", T0 + seconds(9), 40), RULES) == []
    assert state.apply_observations("vitals", vitals("p1", T0 + seconds(3), 40), RULES) == []
    assert state.late_samples == 2 * 5  # five quantities in each late message
    after = state.to_state()
    assert after.pop("late") == 10
    before.pop("late")
    assert after == before


def test_a_monitor_sample_far_ahead_is_a_clock_fault_but_a_resumed_monitor_is_not() -> None:
    state = PatientState("p1")
    for t in range(10):  # a 1-Hz monitor
        state.apply_observations("vitals", vitals("p1", T0 + seconds(t), 80), RULES)
    state.apply_observations("vitals", vitals("p1", T0 + timedelta(hours=5), 40), RULES)
    assert state.future_samples == 5  # one glitch: every sample of it dropped
    assert state.clock == (T0 + seconds(9)).timestamp()
    state.apply_observations("vitals", vitals("p1", T0 + seconds(10), 80), RULES)
    # every device of the patient off for 20 min, then back: after 3 messages in a row
    # the jump is real (the first two are lost), and monitoring goes on
    back = T0 + seconds(10 + 1200)
    for t in range(5):
        state.apply_observations("vitals", vitals("p1", back + seconds(t), 80), RULES)
    assert state.future_samples == 5 + 2 * 5
    assert state.clock == (back + seconds(4)).timestamp()


def test_hourly_rows_are_never_judged_against_the_clock() -> None:
    """PhysioNet rows an hour apart after the admission: every one is applied."""
    state = PatientState("p2")
    for hour in range(1, 6):
        state.apply_observations("vitals", vitals("p2", T0 + timedelta(hours=hour), 80), RULES)
    assert state.future_samples == 0
    assert state.clock == (T0 + timedelta(hours=5)).timestamp()


def test_artefact_flagged_map_is_not_used() -> None:
    state = PatientState("p1")
    events: list[AlertEvent] = []
    for t in range(900):
        sample = vitals("p1", T0 + seconds(t), 30, artefact=True)
        events += _events(state.apply_observations("vitals", sample, RULES), t)
    assert state.cache["map_median_1min_mmhg"] is None
    assert not [e for e in events if e.rule_id == MAP_RULE]
    assert state.sources["vitals"].artefact_fraction(state.clock or 0) == 0.2  # 1 of 5 values


def test_data_gap_restarts_the_on_delay() -> None:
    trace: list[float | None] = [56.0] * 240 + [None] * 120 + [56.0] * 240
    assert feed(trace) == []


def test_the_median_is_unknown_once_a_whole_window_has_no_arterial_mean() -> None:
    # low 200 s, then 61 s without MAP (other vitals go on), then low 299 s: no alarm,
    # because at t=260 the window (200, 260] holds no arterial mean
    assert feed([56.0] * 200 + [None] * 61 + [56.0] * 299) == []
    # a 30-s gap leaves the window known: the on-delay runs on and the alarm starts at 300 s
    events = feed([56.0] * 200 + [None] * 30 + [56.0] * 200)
    assert [(e.phase, (e.triggered_at - T0).total_seconds()) for e in events] == [
        (AlertPhase.START, 300.0)
    ]


def test_active_alarm_is_not_cleared_by_missing_data_and_the_line_loss_is_technical() -> None:
    trace: list[float | None] = [56.0] * 420 + [None] * 600
    state = PatientState("p1")
    events: list[AlertEvent] = []
    for t, value in enumerate(trace):
        events += _events(
            state.apply_observations("vitals", vitals("p1", T0 + seconds(t), value), RULES), t
        )
        if t % 5 == 0:  # the worker's 5-s ticks
            events += _events(state.tick((T0 + seconds(t)).timestamp(), RULES), t)
    starts = [
        (e.rule_id, (e.triggered_at - T0).total_seconds())
        for e in events
        if e.phase is AlertPhase.START and e.rule_id != "perfusion.shock_index_high"
    ]
    # MAP: 5 min after the median crossed; line loss: first tick with the age > 120 s
    assert starts == [(MAP_RULE, 300.0), ("technical.arterial_line_no_data", 540.0)]
    assert (
        next(e for e in events if e.rule_id == "technical.arterial_line_no_data").kind
        == "technical"
    )


def test_state_restored_mid_episode_continues_identically() -> None:
    """What a restarted worker does: state from the changelog (JSON), then more samples."""
    uninterrupted = feed(list(HYPOTENSION), rule_id=None)
    state = PatientState("p-hypo")
    events = []
    for t, map_mmhg in enumerate(HYPOTENSION):
        if t in (650, 1000, 1700):  # pending, active, clearing
            state = PatientState.from_state(json.loads(json.dumps(state.to_state())))
        events += _events(
            state.apply_observations("vitals", vitals("p-hypo", T0 + seconds(t), map_mmhg), RULES),
            t,
        )
    assert events == uninterrupted


def test_several_messages_in_the_same_second_do_not_hide_the_arterial_pressure() -> None:
    state = PatientState("p-split")
    phases = []
    for t, map_mmhg in enumerate(HYPOTENSION):
        at = T0 + seconds(t)
        full = vitals("p-split", at, map_mmhg)
        for part in (full.measurements[:2], full.measurements[2:]):
            message = full.model_copy(update={"measurements": part})
            phases += [
                d.phase
                for d in state.apply_observations("vitals", message, RULES)
                if d.rule_id == MAP_RULE
            ]
    assert phases == [AlertPhase.START, AlertPhase.END]
    assert state.late_samples == 0


def _nirs(patient: str, t: int, left: float, right: float) -> NirsSample:
    at = T0 + seconds(t)
    return NirsSample(
        patient_id=patient,
        source=SourceInfo(adapter="test", device_id="invos-1"),
        received_at=at,
        measurements=(
            Measurement.of(Quantity.RSO2_LEFT, left, at),
            Measurement.of(Quantity.RSO2_RIGHT, right, at),
        ),
    )


def test_rso2_rules_are_evaluated_on_nirs_records_only_and_time_to_the_sample() -> None:
    state = PatientState("p-brain")
    events: list[AlertEvent] = []
    for t in range(0, 1500):
        events += _events(
            state.apply_observations("vitals", vitals("p-brain", T0 + seconds(t), 80), RULES), t
        )
        left = 70.0 if t < 1200 else 45.0  # baseline 70 for 20 min, then a 36% drop
        events += _events(
            state.apply_observations("nirs", _nirs("p-brain", t, left, 70.0), RULES), t
        )
    by_rule = {e.rule_id: e for e in events if e.phase is AlertPhase.START}
    drop = by_rule["brain.rso2_drop_from_baseline"]
    assert state.cache["rso2_baseline_left_pct"] == 70.0
    # the 15-s median crosses a 20% drop (56) once half of its window is low
    assert 1200 + 15 <= (drop.triggered_at - T0).total_seconds() <= 1200 + 8 + 15 + 1
    assert "brain.rso2_asymmetry" in by_rule
    assert "brain.rso2_low" in by_rule  # 45 < 50


def test_tick_raises_no_data_for_a_silent_patient_and_discharge_silences_it() -> None:
    state = PatientState("p-quiet")
    for t in range(60):
        state.apply_observations("vitals", vitals("p-quiet", T0 + seconds(t), 80), RULES)
    assert state.tick((T0 + seconds(70)).timestamp(), RULES) == []  # 11 s: not yet
    drafts = state.tick((T0 + seconds(180)).timestamp(), RULES)
    assert {d.rule_id for d in drafts} >= {"technical.vitals_no_data"}
    other = PatientState("p-gone")
    other.apply_observations("vitals", vitals("p-gone", T0, 80), RULES)
    other.apply_context(
        Discharge(
            patient_id="p-gone",
            observed_at=T0 + seconds(1),
            received_at=T0 + seconds(1),
            source=SourceInfo(adapter="test"),
        ),
        RULES,
    )
    assert other.tick((T0 + seconds(600)).timestamp(), RULES) == []


def test_snapshot_has_every_feature_organ_and_completeness() -> None:
    state = PatientState("p-snap")
    state.apply_context(
        Weight(
            patient_id="p-snap",
            observed_at=T0,
            received_at=T0,
            source=SourceInfo(adapter="test"),
            weight_kg=70.0,
        ),
        RULES,
    )
    for t in range(120):
        state.apply_observations("vitals", vitals("p-snap", T0 + seconds(t), 80), RULES)
    snapshot = state.snapshot((T0 + seconds(119)).timestamp())
    assert snapshot.features["map_median_1min_mmhg"].value == 80.0
    assert snapshot.features["lactate_mmol_l"].value is None  # unknown, never 0
    assert snapshot.organs["liver"].status == "unknown"
    assert snapshot.sofa_total is None
    assert 0 < snapshot.completeness["perfusion"] < 1
    assert not state.snapshot_due((T0 + seconds(125)).timestamp(), 60, 10)


def test_every_feature_has_a_source() -> None:
    assert all(FEATURE_SOURCES[name] for name in FEATURE_SOURCES)
    for rule in RULES.enabled:
        assert all(name in FEATURE_SOURCES for name in rule.feature_names)


def test_replayed_record_offsets_are_skipped() -> None:
    state = PatientState("p1")
    assert not state.seen("icu.vitals:0", 5)
    state.remember("icu.vitals:0", 5)
    assert state.seen("icu.vitals:0", 5)
    assert state.seen("icu.vitals:0", 4)
    assert not state.seen("icu.vitals:0", 6)
    assert not state.seen("icu.vitals:1", 1)
    restored = PatientState.from_state(json.loads(json.dumps(state.to_state())))
    assert restored.seen("icu.vitals:0", 5)


def test_hourly_values_are_charting_not_a_disconnected_monitor() -> None:
    """Hourly rows (PhysioNet, MIMIC charting) have no monitor cadence: no "no data"
    alarm between them, and no tick is due; a 1-Hz monitor that stops is alarmed."""
    state = PatientState("p-charted")
    for hour in range(4):
        state.apply_observations(
            "vitals", vitals("p-charted", T0 + seconds(3600 * hour), 80), RULES
        )
    assert state.cache.get("vitals_interval_s") == 3600.0  # charting, not a monitor
    assert state.future_samples == 0
    clock = (T0 + seconds(3 * 3600)).timestamp()
    assert state.next_tick_at(RULES, clock) is None
    assert state.tick(clock + 3000, RULES) == []

    streaming = PatientState("p-monitor")
    for t in range(30):
        streaming.apply_observations("vitals", vitals("p-monitor", T0 + seconds(t), 80), RULES)
    last = (T0 + seconds(29)).timestamp()
    due = streaming.next_tick_at(RULES, last)
    assert due == last + 60  # vitals age > 60 s is the first rule that could start
    assert streaming.tick(due, RULES) == []  # age == 60 s: not over 60 yet
    started = streaming.tick(due + 5, RULES)
    assert {d.rule_id for d in started} == {"technical.vitals_no_data"}
    assert streaming.next_tick_at(RULES, due + 5) == due + 5  # shown: every grid point


def test_scheduled_ticks_raise_what_ticking_every_patient_every_grid_point_raises() -> None:
    """The tick schedule only skips evaluations that cannot change anything."""
    from datetime import UTC, datetime

    from services.sim.engine import IcuConfig, simulate_icu
    from services.sim.scenarios import parse_scenario
    from streams.merge import TICK_EVERY_S, PartitionMerge
    from streams.offline import RAW_SOURCES, OfflinePipeline, partition_of

    start = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
    plan = (
        "device_disconnect:bed=1,onset=10m,duration=4m",
        "device_disconnect:bed=2,onset=30m,duration=90s",
        "hypotension:bed=3,onset=20m,duration=10m",
        "cerebral_desaturation:bed=4,onset=25m,duration=10m,side=left",
        "crrt_filter_clotting:bed=5,onset=15m,duration=40m",
    )
    config = IcuConfig(
        beds=6,
        seed=11,
        start=start,
        duration_s=5400,
        scenarios=tuple(parse_scenario(s) for s in plan),
    )
    records = [
        (r.topic, r.payload)
        for _s, batch in simulate_icu(config, clock=lambda: start)
        for r in batch
        if r.topic in RAW_SOURCES
    ]
    pipeline = OfflinePipeline(RULES)
    scheduled = [(d.rule_id, d.event_id) for src, p in records for d in pipeline.feed(src, p)]

    # reference: the same routing and merge, every known patient ticked on every grid point
    patients: dict[str, PatientState] = {}
    merges: dict[int, PartitionMerge] = {}
    everywhere: list[tuple[str, str]] = []
    ticks = 0
    for source, record in records:
        payload = getattr(record, "root", record)
        state = patients.setdefault(payload.patient_id, PatientState(payload.patient_id))
        if source not in ("vitals", "nirs", "crrt"):
            drafts = (
                state.apply_observations(source, payload, RULES)
                if source == "labs"
                else state.apply_context(payload, RULES)
            )
            everywhere += [(d.rule_id, d.event_id) for d in drafts]
            continue
        partition = partition_of(payload.patient_id, 4)
        merge = merges.setdefault(partition, PartitionMerge())
        merge.add(source, payload.observed_at.timestamp(), payload)
        for kind, at, item in merge.release(lambda _s: True):
            if kind == "tick":
                for other in sorted(patients):
                    if partition_of(other, 4) == partition:
                        ticks += 1
                        everywhere += [
                            (d.rule_id, d.event_id) for d in patients[other].tick(at, RULES)
                        ]
            else:
                drafts = patients[item.patient_id].apply_observations(kind, item, RULES)
                everywhere += [(d.rule_id, d.event_id) for d in drafts]
    assert ticks > config.duration_s / TICK_EVERY_S
    no_data = {rule for rule, _id in scheduled if rule.endswith("_no_data")}
    assert {"technical.vitals_no_data", "technical.arterial_line_no_data"} <= no_data
    assert sorted(scheduled) == sorted(everywhere)


def _risk(
    patient: str,
    t: int,
    probability: float,
    outcome: str = "mods_progression_6h",
    threshold: float | None = None,
) -> RiskScore:
    return RiskScore(
        patient_id=patient,
        computed_at=T0 + seconds(t),
        outcome=outcome,
        horizon_h=6.0 if outcome == "mods_progression_6h" else None,
        probability=probability,
        model_id="test",
        model_version="1",
        cold_start=False,
        decision_threshold=threshold,
    )


def test_risk_scores_alarm_after_their_on_delay_and_clear_through_hysteresis() -> None:
    """risk.mods_progression_high: >= 0.3 held 15 min raises, >= 0.6 escalates to high;
    below 0.2 for 30 min ends; 0.25 is inside the hysteresis band and keeps it; risk
    never reaches the features topic."""
    state = PatientState("p-risk")
    state.apply_observations("vitals", vitals("p-risk", T0, 80), RULES)
    events: list[AlertEvent] = []
    trace = [(t, 0.1) for t in range(0, 600, 60)]
    trace += [(t, 0.4) for t in range(600, 1800, 60)]  # high from 600 s
    trace += [(t, 0.7) for t in range(1800, 2100, 60)]  # escalates
    trace += [(t, 0.25) for t in range(2100, 2400, 60)]  # in the band: stays
    trace += [(t, 0.1) for t in range(2400, 5400, 60)]  # cleared from 2400 s
    for t, p in trace:
        events += _events(state.apply_risk(_risk("p-risk", t, p), RULES), t)
        if t == 1500:  # the alarm is shown: the state pickles, and round-trips
            assert state.alarms
            assert pickle.loads(pickle.dumps(state)).to_state() == state.to_state()
    mine = [e for e in events if e.rule_id == "risk.mods_progression_high"]
    assert [(e.phase, e.priority, e.triggered_at) for e in mine if e.phase != "update"] == [
        (AlertPhase.START, AlertPriority.MEDIUM, T0 + seconds(1500)),
        (AlertPhase.ESCALATE, AlertPriority.HIGH, T0 + seconds(1800)),
        (AlertPhase.END, AlertPriority.HIGH, T0 + seconds(2400 + 1800)),
    ]
    assert mine[0].values["risk_mods_progression_6h"] == 0.4
    assert state.apply_risk(_risk("p-risk", 60, 0.9), RULES) == []  # late: dropped
    assert state.late_samples == 1
    snapshot = state.snapshot(state.clock or 0.0)
    assert not any(name.startswith("risk_") for name in snapshot.features)


def test_sepsis_risk_alarms_against_the_threshold_the_model_learned() -> None:
    state = PatientState("p-sepsis")
    events: list[AlertEvent] = []
    for t in range(0, 1800, 60):  # threshold 0.08: 0.1 is above it
        score = _risk("p-sepsis", t, 0.05 if t < 300 else 0.1, "sepsis", 0.08)
        events += _events(state.apply_risk(score, RULES), t)
    starts = [e for e in events if e.rule_id == "risk.sepsis_high" and e.phase == "start"]
    assert [e.triggered_at for e in starts] == [T0 + seconds(900)]
    assert starts[0].values["risk_sepsis_threshold_ratio"] == 1.25


def test_a_risk_score_read_after_the_discharge_is_judged_by_its_own_time() -> None:
    """The agent may read a patient's features after the worker read its discharge (a
    replay at full speed): its scores from before the discharge still raise the alarm,
    and one from the discharge time on does not, whatever the pace."""
    state = PatientState("p-late")
    state.apply_observations("vitals", vitals("p-late", T0 + seconds(3600), 80), RULES)
    discharge = Discharge(
        patient_id="p-late",
        observed_at=T0 + seconds(3600),
        received_at=T0 + seconds(3600),
        source=SourceInfo(adapter="test"),
    )
    state.apply_context(discharge, RULES)
    events: list[AlertEvent] = []
    for t in range(0, 3660, 60):
        events += _events(state.apply_risk(_risk("p-late", t, 0.2, "sepsis", 0.1), RULES), t)
    starts = [e for e in events if e.rule_id == "risk.sepsis_high" and e.phase == "start"]
    assert [e.triggered_at for e in starts] == [T0 + seconds(600)]
    assert all(e.triggered_at < T0 + seconds(3600) for e in events)


def test_a_discharge_ends_every_alarm_of_the_stay() -> None:
    state = PatientState("p-out")
    state.apply_observations("vitals", vitals("p-out", T0, 80), RULES)
    events: list[AlertEvent] = []
    for t in range(0, 1560, 60):
        events += _events(state.apply_risk(_risk("p-out", t, 0.4), RULES), t)
    assert [e.phase for e in events if e.rule_id == "risk.mods_progression_high"] == ["start"]
    discharge = Discharge(
        patient_id="p-out",
        observed_at=T0 + seconds(1600),
        received_at=T0 + seconds(1600),
        source=SourceInfo(adapter="test"),
    )
    ended = _events(state.apply_context(discharge, RULES), 1600)
    assert [(e.rule_id, e.phase, e.reason) for e in ended] == [
        ("risk.mods_progression_high", "end", "discharged")
    ]
    assert ended[0].triggered_at == T0 + seconds(1600)
    assert state.alarms == []
    assert state.apply_observations("vitals", vitals("p-out", T0 + seconds(1700), 30), RULES) == []
