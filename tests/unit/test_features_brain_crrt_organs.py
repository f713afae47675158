"""Brain (NIRS), CRRT circuit and other-organ (SOFA input) feature groups.

Each worked example is checked against a value computed independently (by hand
or with a short numpy reference over the same scripted inputs).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import numpy as np
import pytest

from schemas.codes import Quantity
from schemas.common import SourceInfo
from schemas.context import Drug, Gcs, Infusion, PatientContext, Weight
from streams.features.base import PatientFacts
from streams.features.brain import BrainFeatures
from streams.features.catalog import FEATURES
from streams.features.crrt import CrrtCircuitFeatures
from streams.features.organs import OrganFeatures

H = 3600.0
T0 = 1_699_999_200.0  # an hour boundary (epoch s): real streams use real epochs
assert T0 % H == 0
FACTS_70 = PatientFacts(weight_kg=70.0)
SOURCE = SourceInfo(adapter="context")

Group = BrainFeatures | CrrtCircuitFeatures | OrganFeatures
Event = tuple[float, Quantity | PatientContext, float]


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def infusion(t: float, drug: Drug, rate: float, unit: str = "ug/kg/min") -> Infusion:
    return Infusion(
        patient_id="p1",
        observed_at=_when(t),
        received_at=_when(t),
        source=SOURCE,
        drug=drug,
        rate=rate,
        rate_unit=unit,
    )


def gcs(t: float, total: int) -> Gcs:
    return Gcs(
        patient_id="p1", observed_at=_when(t), received_at=_when(t), source=SOURCE, total=total
    )


def feed(group: Group, events: list[Event]) -> None:
    for t, what, value in events:
        if isinstance(what, Quantity):
            group.observe(what, t, value)
        else:
            group.observe_context(what, t)


def roundtrip(group: Group) -> Group:
    state = json.loads(json.dumps(group.to_state(), allow_nan=False))
    return type(group).from_state(state)


def assert_names(group: Group, organs: set[str]) -> None:
    names = set(group.features(T0, FACTS_70))
    assert names == {n for n, spec in FEATURES.items() if spec.organ in organs}


def assert_restores_identically(
    make: Callable[[], Group], events: list[Event], facts: PatientFacts, every_s: float
) -> None:
    """Restore at several points; the restored group must match an uninterrupted one."""
    events = sorted(events, key=lambda e: e[0])
    checkpoints = {len(events) * k // 5 for k in range(1, 5)}
    uninterrupted = make()
    restored = make()
    next_check = events[0][0]
    for i, (t, what, value) in enumerate(events):
        if i in checkpoints:
            restored = roundtrip(restored)
        for g in (uninterrupted, restored):
            feed(g, [(t, what, value)])
        if t >= next_check:
            assert restored.features(t, facts) == uninterrupted.features(t, facts), t
            next_check = t + every_s
    end = events[-1][0]
    for later in (end, end + 30, end + 400, end + 2 * H):
        assert roundtrip(restored).features(later, facts) == uninterrupted.features(later, facts)


# --- brain --------------------------------------------------------------------------


def nirs(
    start: float,
    end: float,
    left: Callable[[float], float],
    right: Callable[[float], float],
    step: float = 1.0,
) -> list[Event]:
    out: list[Event] = []
    t = start
    while t <= end:
        out.append((t, Quantity.RSO2_LEFT, left(t)))
        out.append((t, Quantity.RSO2_RIGHT, right(t)))
        t += step
    return out


def test_brain_outputs_exactly_the_catalogue_names() -> None:
    assert_names(BrainFeatures(), {"brain"})
    assert all(v is None for v in BrainFeatures().features(T0, FACTS_70).values())


def test_side_value_is_the_15s_median_of_the_latest_samples() -> None:
    rng = random.Random(3)
    values = [60.0 + rng.randint(-8, 8) for _ in range(120)]
    brain = BrainFeatures()
    feed(brain, [(T0 + s, Quantity.RSO2_LEFT, v) for s, v in enumerate(values)])
    at = T0 + 119
    expected = float(np.median(values[105:120]))  # samples in (at - 15, at]
    f = brain.features(at + 10, FACTS_70)  # held between samples
    assert f["rso2_left_pct"] == expected
    assert f["rso2_min_pct"] == expected  # the only known side
    assert f["rso2_right_pct"] is None
    assert f["rso2_asymmetry_points"] is None


def test_a_5s_device_stays_known_between_samples_and_goes_stale_after_30s() -> None:
    brain = BrainFeatures()
    feed(brain, nirs(T0, T0 + 60, lambda t: 62.0, lambda t: 58.0, step=5.0))
    assert brain.features(T0 + 64, FACTS_70)["rso2_left_pct"] == 62.0
    assert brain.features(T0 + 90, FACTS_70)["rso2_min_pct"] == 58.0
    f = brain.features(T0 + 91, FACTS_70)
    assert f["rso2_left_pct"] is None
    assert f["rso2_min_pct"] is None


def test_baseline_is_the_median_of_the_first_10_stable_minutes_then_frozen() -> None:
    rng = random.Random(7)

    def settling_then_stable(t: float) -> float:
        minute = (t - T0) // 60
        if minute < 4:  # sensor settling: 40 -> 76, not stable
            return 40.0 + 9.0 * minute
        return 66.0 + rng.choice((-2.0, -1.0, 0.0, 1.0, 3.0))

    events = nirs(T0, T0 + 30 * 60, settling_then_stable, lambda t: 70.0)
    brain = BrainFeatures()
    feed(brain, events)
    lefts = np.array([v for t, q, v in events if q is Quantity.RSO2_LEFT])
    times = np.array([t for t, q, v in events if q is Quantity.RSO2_LEFT])
    minute_means = [lefts[(times - T0) // 60 == m].mean() for m in range(30)]
    # reference: the first run of 10 minute means all within 5 points of their median
    first_stable = None
    for start in range(0, 21):
        window = minute_means[start : start + 10]
        med = float(np.median(window))
        if all(abs(m - med) <= 5.0 for m in window):
            first_stable = med
            break
    assert first_stable is not None
    f = brain.features(T0 + 30 * 60, FACTS_70)
    assert f["rso2_baseline_left_pct"] == pytest.approx(first_stable)
    assert f["rso2_baseline_right_pct"] == 70.0
    # frozen: a later fall does not move it
    feed(brain, nirs(T0 + 30 * 60 + 1, T0 + 50 * 60, lambda t: 40.0, lambda t: 70.0))
    assert brain.features(T0 + 50 * 60, FACTS_70)["rso2_baseline_left_pct"] == pytest.approx(
        first_stable
    )


def test_no_baseline_while_unstable_or_with_gaps() -> None:
    brain = BrainFeatures()
    # alternating minutes 60 / 72: each minute mean 6 points from the median 66
    feed(
        brain,
        nirs(T0, T0 + 20 * 60, lambda t: 60.0 + 12.0 * (((t - T0) // 60) % 2), lambda t: 70.0),
    )
    assert brain.features(T0 + 20 * 60, FACTS_70)["rso2_baseline_left_pct"] is None
    gappy = BrainFeatures()  # samples in every other minute only
    feed(
        gappy,
        [
            e
            for e in nirs(T0, T0 + 30 * 60, lambda t: 70.0, lambda t: 70.0)
            if (e[0] - T0) // 60 % 2 == 0
        ],
    )
    assert gappy.features(T0 + 30 * 60, FACTS_70)["rso2_baseline_left_pct"] is None


def test_device_baseline_wins_and_drop_is_the_larger_relative_fall_unclamped() -> None:
    brain = BrainFeatures()
    feed(brain, nirs(T0, T0 + 12 * 60, lambda t: 70.0, lambda t: 60.0))
    feed(brain, [(T0 + 12 * 60, Quantity.RSO2_BASELINE_LEFT, 80.0)])
    f = brain.features(T0 + 12 * 60, FACTS_70)
    assert f["rso2_baseline_left_pct"] == 80.0  # device, not the computed 70
    assert f["rso2_baseline_right_pct"] == 60.0  # computed
    # left: 100 x (80 - 70) / 80 = 12.5; right: 0  -> 12.5
    assert f["rso2_drop_from_baseline_pct"] == pytest.approx(12.5)
    assert f["rso2_asymmetry_points"] == 10.0
    feed(brain, nirs(T0 + 12 * 60 + 1, T0 + 13 * 60, lambda t: 88.0, lambda t: 66.0))
    # above both baselines: left -10 %, right -10 %  -> not clamped at 0
    assert brain.features(T0 + 13 * 60, FACTS_70)["rso2_drop_from_baseline_pct"] == pytest.approx(
        -10.0
    )


def test_area_below_50_over_60_min_matches_a_held_sample_reference() -> None:
    rng = random.Random(11)
    samples: list[tuple[float, float]] = []
    t = T0
    while t < T0 + 90 * 60:
        samples.append((t, 44.0 + rng.random() * 12.0))
        t += 1.0 if rng.random() > 0.02 else 25.0  # occasional 25-s dropout
    brain = BrainFeatures()
    feed(brain, [(t, Quantity.RSO2_LEFT, v) for t, v in samples])
    feed(brain, [(t, Quantity.RSO2_RIGHT, 70.0) for t, _ in samples])
    at = samples[-1][0]
    # reference: each sample held until the next, at most 10 s, credited to its own minute
    first_minute = int((at - 3600) // 60) + 1
    area = 0.0
    for (t0, v), (t1, _) in itertools.pairwise(samples):
        if v < 50 and first_minute <= int(t0 // 60) <= int(at // 60):
            area += (50 - v) * min(t1 - t0, 10.0) / 60.0
    f = brain.features(at, FACTS_70)
    assert f["rso2_area_below_50_60min_pct_min"] == pytest.approx(area, rel=1e-9)
    # the cache gives the same answer as a fresh object, at later minutes too
    for later in (at + 5, at + 61, at + 1800):
        fresh = roundtrip(brain)
        assert brain.features(later, FACTS_70) == fresh.features(later, FACTS_70)
    assert brain.features(at + 3601, FACTS_70)["rso2_area_below_50_60min_pct_min"] is None


def test_nse_is_placed_by_time_and_expires_after_7_days() -> None:
    brain = BrainFeatures()
    brain.observe(Quantity.NSE, T0 + 2 * 86400, 31.0)
    brain.observe(Quantity.NSE, T0, 18.0)  # older result arriving late
    assert brain.features(T0 + 3 * 86400, FACTS_70)["nse_ng_ml"] == 31.0
    assert brain.features(T0 + 86400, FACTS_70)["nse_ng_ml"] == 18.0
    assert brain.features(T0 + 9 * 86400 + 1, FACTS_70)["nse_ng_ml"] is None


def brain_day(hours: float) -> list[Event]:
    rng = random.Random(5)
    events = nirs(
        T0,
        T0 + hours * H,
        lambda t: 62.0 + 14.0 * math.sin((t - T0) / 900.0) + rng.random() * 3,
        lambda t: 64.0 + rng.random() * 3,
    )
    events.append((T0 + 600, Quantity.NSE, 22.0))
    return events


def test_brain_state_round_trip_gives_identical_features() -> None:
    assert_restores_identically(BrainFeatures, brain_day(2.5), FACTS_70, every_s=37.0)


def test_brain_memory_is_bounded_over_24h_at_1hz() -> None:
    brain = BrainFeatures()
    feed(brain, brain_day(24))
    for side in brain.sides.values():
        assert len(side.median) <= 16
        assert len(side.minutes.buckets) <= 62
    assert len(json.dumps(brain.to_state())) < 20_000


def test_brain_is_deterministic() -> None:
    a, b = BrainFeatures(), BrainFeatures()
    feed(a, brain_day(1))
    feed(b, brain_day(1))
    assert a.features(T0 + H, FACTS_70) == b.features(T0 + H, FACTS_70)
    assert a.to_state() == b.to_state()


# --- CRRT ---------------------------------------------------------------------------


def crrt_status(
    t: float,
    flow: float,
    effluent: float = 2100.0,
    net_uf: float = 100.0,
    prefilter: float | None = 120.0,
    drop: float | None = 40.0,
    tmp: float | None = 90.0,
) -> list[Event]:
    out: list[Event] = [
        (t, Quantity.CRRT_BLOOD_FLOW, flow),
        (t, Quantity.CRRT_EFFLUENT_RATE, effluent),
        (t, Quantity.CRRT_NET_UF_RATE, net_uf),
    ]
    for quantity, value in (
        (Quantity.CRRT_PREFILTER_PRESSURE, prefilter),
        (Quantity.CRRT_FILTER_PRESSURE_DROP, drop),
        (Quantity.CRRT_TMP, tmp),
    ):
        if value is not None:
            out.append((t, quantity, value))
    return out


def every(start: float, end: float, step: float) -> Iterator[float]:
    t = start
    while t <= end:
        yield t
        t += step


def test_crrt_outputs_exactly_the_catalogue_names() -> None:
    assert_names(CrrtCircuitFeatures(), {"crrt"})
    assert all(v is None for v in CrrtCircuitFeatures().features(T0, FACTS_70).values())


def test_pump_stopped_seconds_running_flag_and_staleness() -> None:
    crrt = CrrtCircuitFeatures()
    for t in every(T0, T0 + 600, 30):
        feed(crrt, crrt_status(t, 150.0))
    f = crrt.features(T0 + 610, FACTS_70)
    assert (f["crrt_running"], f["crrt_blood_pump_stopped_s"], f["crrt_blood_flow_ml_min"]) == (
        1.0,
        0.0,
        150.0,
    )
    for t in every(T0 + 630, T0 + 780, 30):  # stops at T0 + 630
        feed(crrt, crrt_status(t, 0.0))
    f = crrt.features(T0 + 790, FACTS_70)
    assert (f["crrt_running"], f["crrt_blood_pump_stopped_s"]) == (0.0, 160.0)
    # the last status (T0 + 780) is more than 5 min old: unknown, not "stopped"
    f = crrt.features(T0 + 1081, FACTS_70)
    assert f["crrt_running"] is None
    assert f["crrt_blood_pump_stopped_s"] is None
    assert crrt.on_crrt(T0 + 1081)


def test_a_machine_that_never_ran_is_not_reported_as_stopped() -> None:
    crrt = CrrtCircuitFeatures()
    feed(crrt, crrt_status(T0, 0.0))  # primed, not started
    f = crrt.features(T0 + 10, FACTS_70)
    assert f["crrt_running"] is None
    assert f["crrt_blood_pump_stopped_s"] is None
    assert f["crrt_blood_flow_ml_min"] == 0.0
    assert f["crrt_effluent_dose_ml_kg_h"] is None
    assert f["crrt_downtime_24h_min"] is None
    assert not crrt.on_crrt(T0 + 10)


def test_delivered_dose_counts_effluent_only_while_the_pump_runs() -> None:
    crrt = CrrtCircuitFeatures()
    for t in every(T0, T0 + 3 * H, 60):
        stopped = T0 + H <= t < T0 + H + 1800  # 30 min downtime
        feed(crrt, crrt_status(t, 0.0 if stopped else 180.0, effluent=2100.0, net_uf=140.0))
    f = crrt.features(T0 + 3 * H, FACTS_70)
    # 2100 mL/h x 2.5 h delivered = 5250 mL over 3 h for 70 kg = 25.0 mL/kg/h
    assert f["crrt_effluent_dose_ml_kg_h"] == pytest.approx(25.0)
    assert f["crrt_downtime_24h_min"] == pytest.approx(30.0)
    assert f["crrt_net_uf_ml_kg_h"] == pytest.approx(2.0)  # 140 / 70
    no_weight = crrt.features(T0 + 3 * H, PatientFacts())
    assert no_weight["crrt_effluent_dose_ml_kg_h"] is None
    assert no_weight["crrt_net_uf_ml_kg_h"] is None
    assert no_weight["crrt_downtime_24h_min"] == pytest.approx(30.0)


def test_no_dose_before_1h_of_therapy() -> None:
    crrt = CrrtCircuitFeatures()
    for t in every(T0, T0 + 1800, 30):
        feed(crrt, crrt_status(t, 150.0))
    f = crrt.features(T0 + 1800, FACTS_70)
    assert f["crrt_effluent_dose_ml_kg_h"] is None
    assert f["crrt_downtime_24h_min"] == 0.0


def test_dose_uses_the_last_24h_and_a_silent_machine_delivers_nothing() -> None:
    crrt = CrrtCircuitFeatures()
    for t in every(T0, T0 + 30 * H, 60):
        feed(crrt, crrt_status(t, 150.0, effluent=1400.0 if t < T0 + 6 * H else 2100.0))
    # last 24 h at 2100 mL/h for 70 kg -> 30 mL/kg/h (the first 6 h at 1400 are out)
    assert crrt.features(T0 + 30 * H, FACTS_70)["crrt_effluent_dose_ml_kg_h"] == pytest.approx(30.0)
    # 1 h of silence: only the 5-min hold of the last status counts
    later = crrt.features(T0 + 31 * H, FACTS_70)
    expected = 2100.0 * (23 + 5 / 60) / 24 / 70  # hour T0+7h..+30h, + 5 min
    assert later["crrt_effluent_dose_ml_kg_h"] == pytest.approx(expected)
    assert later["crrt_downtime_24h_min"] == 0.0  # silence is not counted as downtime
    assert later["crrt_running"] is None
    assert crrt.features(T0 + 54 * H + 1, FACTS_70)["crrt_effluent_dose_ml_kg_h"] is None


def test_a_new_episode_after_24h_without_flow_restarts_the_dose_period() -> None:
    crrt = CrrtCircuitFeatures()
    for t in every(T0, T0 + 2 * H, 60):
        feed(crrt, crrt_status(t, 150.0, effluent=700.0))
    restart = T0 + 30 * H
    for t in every(restart, restart + 2 * H, 60):
        feed(crrt, crrt_status(t, 150.0, effluent=1750.0))
    assert crrt.therapy_start_s == restart
    f = crrt.features(restart + 2 * H, FACTS_70)
    assert f["crrt_effluent_dose_ml_kg_h"] == pytest.approx(25.0)


def test_pressure_trends_are_60min_slopes_of_minute_means() -> None:
    crrt = CrrtCircuitFeatures()
    rng = random.Random(2)
    times = list(every(T0, T0 + 90 * 60, 20))
    prefilter = [150.0 + 40.0 * (t - T0) / H + rng.uniform(-3, 3) for t in times]
    for t, p in zip(times, prefilter, strict=True):
        feed(crrt, crrt_status(t, 160.0, prefilter=p, drop=None, tmp=100.0))
    at = times[-1]
    minutes = np.array([int(t // 60) for t in times])
    values = np.array(prefilter)
    # the 60 complete minutes before the evaluation minute
    window = [m for m in sorted(set(minutes)) if int(at // 60) - 60 <= m < int(at // 60)]
    means = [values[minutes == m].mean() for m in window]
    slope = np.polyfit(window, means, 1)[0] * 60.0
    f = crrt.features(at, FACTS_70)
    assert f["crrt_prefilter_trend_mmhg_h"] == pytest.approx(slope, rel=1e-9)
    assert f["crrt_prefilter_trend_mmhg_h"] == pytest.approx(40.0, abs=3.0)
    assert f["crrt_tmp_trend_mmhg_h"] == pytest.approx(0.0, abs=1e-9)
    assert f["crrt_prefilter_pressure_mmhg"] == prefilter[-1]
    # no filter pressure drop sent: not derived from the other pressures
    assert f["crrt_filter_pressure_drop_mmhg"] is None
    assert f["crrt_filter_pressure_drop_trend_mmhg_h"] is None
    # stale pressure: no value, no trend
    g = crrt.features(at + 301, FACTS_70)
    assert g["crrt_prefilter_pressure_mmhg"] is None
    assert g["crrt_prefilter_trend_mmhg_h"] is None


def test_trend_cache_sees_a_late_sample_of_a_past_minute() -> None:
    crrt, fresh = CrrtCircuitFeatures(), CrrtCircuitFeatures()
    for t in every(T0, T0 + 20 * 60 - 1, 30):
        for g in (crrt, fresh):
            feed(g, crrt_status(t, 150.0, prefilter=100.0 + (t - T0) / 60.0))
    at = T0 + 20 * 60 + 0.5
    before = crrt.features(at, FACTS_70)["crrt_prefilter_trend_mmhg_h"]
    late = [(T0 + 20 * 60 - 0.5, Quantity.CRRT_PREFILTER_PRESSURE, 400.0)]  # minute 19
    feed(crrt, late)
    feed(fresh, late)
    after = crrt.features(at, FACTS_70)["crrt_prefilter_trend_mmhg_h"]
    assert after != before
    assert after == fresh.features(at, FACTS_70)["crrt_prefilter_trend_mmhg_h"]


def test_no_trend_from_fewer_than_10_minutes() -> None:
    crrt = CrrtCircuitFeatures()
    for t in every(T0, T0 + 8 * 60, 30):
        feed(crrt, crrt_status(t, 150.0, prefilter=100.0 + t - T0))
    assert crrt.features(T0 + 8 * 60, FACTS_70)["crrt_prefilter_trend_mmhg_h"] is None


def test_on_crrt_means_flow_seen_in_the_last_24h() -> None:
    crrt = CrrtCircuitFeatures()
    feed(crrt, crrt_status(T0, 150.0))
    feed(crrt, crrt_status(T0 + 60, 0.0))
    assert crrt.on_crrt(T0 + 24 * H)
    assert not crrt.on_crrt(T0 + 24 * H + 1)


def crrt_day(hours: float) -> list[Event]:
    rng = random.Random(9)
    events: list[Event] = []
    for t in every(T0, T0 + hours * H, 15):
        stopped = (t - T0) % (6 * H) < 600
        events += crrt_status(
            t,
            0.0 if stopped else 150.0,
            effluent=2000.0 + rng.uniform(-50, 50),
            net_uf=rng.uniform(50, 150),
            prefilter=140.0 + (t - T0) / 300.0 + rng.uniform(-2, 2),
            drop=30.0 + rng.uniform(-2, 2),
            tmp=80.0 + rng.uniform(-5, 5),
        )
    return events


def test_crrt_state_round_trip_gives_identical_features() -> None:
    assert_restores_identically(CrrtCircuitFeatures, crrt_day(8), FACTS_70, every_s=41.0)


def test_crrt_memory_is_bounded_over_24h() -> None:
    crrt = CrrtCircuitFeatures()
    feed(crrt, crrt_day(30))
    assert all(len(b.buckets) <= 62 for b in crrt.trends.values())
    assert len(crrt.effluent.hours) <= 27
    assert len(crrt.downtime.hours) <= 27
    assert len(json.dumps(crrt.to_state())) < 20_000


# --- other organs -------------------------------------------------------------------


def test_organs_output_exactly_the_catalogue_names() -> None:
    assert_names(OrganFeatures(), {"respiratory", "coagulation", "liver", "cns", "cardiovascular"})
    f = OrganFeatures().features(T0, FACTS_70)
    assert f.pop("vasopressor_on") == 0.0
    for drug in ("norepinephrine", "epinephrine", "dopamine", "dobutamine"):
        assert f.pop(f"{drug}_ug_kg_min") == 0.0  # nothing charted: no drip runs
    assert all(v is None for v in f.values())


def test_spo2_and_resp_rate_are_1min_medians() -> None:
    rng = random.Random(4)
    spo2 = [90.0 + rng.randint(0, 8) for _ in range(200)]
    rr = [14.0 + rng.randint(0, 12) for _ in range(200)]
    organs = OrganFeatures()
    feed(organs, [(T0 + s, Quantity.SPO2, v) for s, v in enumerate(spo2)])
    feed(organs, [(T0 + s, Quantity.RESP_RATE, v) for s, v in enumerate(rr)])
    f = organs.features(T0 + 199, FACTS_70)
    assert f["spo2_pct"] == float(np.median(spo2[140:]))
    assert f["resp_rate_per_min"] == float(np.median(rr[140:]))
    assert organs.features(T0 + 199 + 61, FACTS_70)["spo2_pct"] is None


def test_fio2_fraction_is_converted_and_impossible_values_dropped() -> None:
    organs = OrganFeatures()
    organs.observe(Quantity.FIO2, T0, 0.35)
    assert organs.features(T0, FACTS_70)["fio2_pct"] == pytest.approx(35.0)
    organs.observe(Quantity.FIO2, T0 + 60, 8.0)  # neither a fraction nor a percentage
    assert organs.features(T0 + 60, FACTS_70)["fio2_pct"] == pytest.approx(35.0)
    organs.observe(Quantity.FIO2, T0 + 120, 60.0)
    assert organs.features(T0 + 120, FACTS_70)["fio2_pct"] == 60.0
    assert organs.features(T0 + 120 + 24 * H + 1, FACTS_70)["fio2_pct"] is None


def test_pf_ratio_pairs_the_pao2_with_the_fio2_in_force_at_its_time() -> None:
    organs = OrganFeatures()
    organs.observe(Quantity.PAO2, T0 + 600, 75.0)
    organs.observe(Quantity.FIO2, T0 + 1200, 80.0)  # raised after the gas
    organs.observe(Quantity.FIO2, T0, 50.0)  # charted late, placed by its time
    f = organs.features(T0 + 1300, FACTS_70)
    assert f["pao2_mmhg"] == 75.0
    assert f["fio2_pct"] == 80.0
    assert f["pf_ratio_mmhg"] == pytest.approx(150.0)  # 75 / 0.50, not 75 / 0.80
    assert organs.features(T0 + 600 + 6 * H + 1, FACTS_70)["pf_ratio_mmhg"] is None
    lone = OrganFeatures()
    lone.observe(Quantity.FIO2, T0, 40.0)
    lone.observe(Quantity.PAO2, T0 + 6 * H + 1, 80.0)  # the FiO2 is too old for the gas
    assert lone.features(T0 + 6 * H + 2, FACTS_70)["pf_ratio_mmhg"] is None


def test_sf_ratio_only_while_spo2_is_at_most_97() -> None:
    organs = OrganFeatures()
    organs.observe(Quantity.FIO2, T0, 40.0)
    feed(organs, [(T0 + s, Quantity.SPO2, 92.0) for s in range(60)])
    assert organs.features(T0 + 59, FACTS_70)["sf_ratio"] == pytest.approx(230.0)
    feed(organs, [(T0 + 60 + s, Quantity.SPO2, 99.0) for s in range(60)])
    assert organs.features(T0 + 119, FACTS_70)["sf_ratio"] is None


def test_labs_gcs_and_temperature_expire() -> None:
    organs = OrganFeatures()
    organs.observe(Quantity.PLATELETS, T0 + H, 95.0)
    organs.observe(Quantity.PLATELETS, T0, 140.0)  # late, older
    organs.observe(Quantity.BILIRUBIN_TOTAL, T0, 2.4)
    organs.observe(Quantity.TEMPERATURE, T0, 38.4)
    organs.observe_context(gcs(T0, 11), T0)
    organs.observe_context(gcs(T0 - H, 14), T0 - H)  # late, older
    f = organs.features(T0 + H, FACTS_70)
    assert (f["platelets_10e3_ul"], f["bilirubin_mg_dl"], f["gcs_total"], f["temperature_cel"]) == (
        95.0,
        2.4,
        11.0,
        38.4,
    )
    f = organs.features(T0 + H + 1, FACTS_70)
    assert f["temperature_cel"] is None
    assert f["gcs_total"] == 11.0
    assert organs.features(T0 + 12 * H + 1, FACTS_70)["gcs_total"] is None
    f = organs.features(T0 + 48 * H + 1, FACTS_70)
    assert f["bilirubin_mg_dl"] is None
    assert f["platelets_10e3_ul"] == 95.0


def test_catecholamine_dose_counts_only_after_1h_as_the_lowest_rate_of_the_hour() -> None:
    organs = OrganFeatures()
    ne = Drug.NOREPINEPHRINE
    organs.observe_context(infusion(T0, ne, 0.05), T0)
    organs.observe_context(infusion(T0 + 1800, ne, 0.15), T0 + 1800)
    organs.observe_context(infusion(T0 + 2 * H, ne, 0.0), T0 + 2 * H)

    def dose(t: float) -> float | None:
        return organs.features(t, FACTS_70)["norepinephrine_ug_kg_min"]

    assert dose(T0 + H - 1) == 0.0  # < 1 h: not yet a SOFA dose
    assert dose(T0 + H) == 0.05  # 1 h at >= 0.05
    assert dose(T0 + 1800 + H) == 0.15  # the whole last hour at 0.15
    assert dose(T0 + 2 * H) == 0.0  # stopped
    assert organs.features(T0 + H - 1, FACTS_70)["vasopressor_on"] == 1.0
    assert organs.features(T0 + 2 * H, FACTS_70)["vasopressor_on"] == 0.0


def test_infusion_units_and_vasopressin() -> None:
    organs = OrganFeatures()
    organs.observe_context(infusion(T0, Drug.EPINEPHRINE, 0.84, "mg/h"), T0)
    organs.observe_context(infusion(T0, Drug.VASOPRESSIN, 0.03, "U/min"), T0)
    organs.observe_context(infusion(T0, Drug.DOBUTAMINE, 5.0, "U/min"), T0)  # nonsense unit
    f = organs.features(T0 + H, FACTS_70)
    assert f["epinephrine_ug_kg_min"] == pytest.approx(0.2)  # 840 ug/h / 60 / 70 kg
    assert f["dobutamine_ug_kg_min"] is None
    assert f["norepinephrine_ug_kg_min"] == 0.0
    assert f["vasopressor_on"] == 1.0
    assert organs.features(T0 + H, PatientFacts())["epinephrine_ug_kg_min"] is None
    only_vasopressin = OrganFeatures()
    only_vasopressin.observe_context(infusion(T0, Drug.VASOPRESSIN, 0.03, "U/min"), T0)
    assert only_vasopressin.features(T0 + 60, FACTS_70)["vasopressor_on"] == 1.0
    dobutamine = OrganFeatures()
    dobutamine.observe_context(infusion(T0, Drug.DOBUTAMINE, 5.0), T0)
    f = dobutamine.features(T0 + H, FACTS_70)
    assert f["vasopressor_on"] == 0.0
    assert f["dobutamine_ug_kg_min"] == 5.0


def test_infusion_events_out_of_order_are_placed_by_time() -> None:
    in_order, shuffled = OrganFeatures(), OrganFeatures()
    events = [
        infusion(T0 + k * 900, Drug.DOPAMINE, rate) for k, rate in enumerate((3, 6, 8, 4, 10))
    ]
    for e in events:
        in_order.observe_context(e, e.observed_at.timestamp())
    for e in (events[2], events[0], events[4], events[1], events[3]):
        shuffled.observe_context(e, e.observed_at.timestamp())
    for t in every(T0, T0 + 3 * H, 300):
        assert in_order.features(t, FACTS_70) == shuffled.features(t, FACTS_70)
    assert in_order.features(T0 + 3600 + 2700, FACTS_70)["dopamine_ug_kg_min"] == 4.0


def test_other_context_events_are_ignored() -> None:
    organs = OrganFeatures()
    organs.observe_context(
        Weight(
            patient_id="p1",
            observed_at=_when(T0),
            received_at=_when(T0),
            source=SOURCE,
            weight_kg=80,
        ),
        T0,
    )
    assert organs.infusions == {}
    assert len(organs.gcs) == 0


def organs_day(hours: float) -> list[Event]:
    rng = random.Random(13)
    events: list[Event] = []
    for t in every(T0, T0 + hours * H, 1):
        events.append((t, Quantity.SPO2, 90.0 + rng.randint(0, 9)))
        events.append((t, Quantity.RESP_RATE, 16.0 + rng.randint(0, 10)))
        if (t - T0) % 60 == 0:
            events.append((t, Quantity.TEMPERATURE, 37.0 + rng.random()))
        if (t - T0) % H == 0:
            events.append((t, Quantity.FIO2, rng.choice((0.4, 50.0, 0.6))))
            events.append((t + 120, Quantity.PAO2, 60.0 + rng.random() * 40))
            events.append((t - 1800, Quantity.PLATELETS, 80.0 + rng.random() * 100))
            events.append((t, infusion(t, Drug.NOREPINEPHRINE, round(rng.random() * 0.3, 2)), 0.0))
            events.append((t - 600, gcs(t - 600, rng.randint(8, 15)), 0.0))
    return events


def test_organs_state_round_trip_gives_identical_features() -> None:
    assert_restores_identically(OrganFeatures, organs_day(3), FACTS_70, every_s=29.0)


def test_organs_memory_is_bounded_over_24h_at_1hz() -> None:
    organs = OrganFeatures()
    feed(organs, sorted(organs_day(24), key=lambda e: e[0]))
    assert len(organs.spo2.median) <= 61
    assert len(organs.resp_rate.median) <= 61
    assert len(organs.fio2) <= 31
    assert len(organs.infusions[Drug.NOREPINEPHRINE].times) <= 4
    assert len(json.dumps(organs.to_state())) < 20_000


def test_organs_are_deterministic() -> None:
    a, b = OrganFeatures(), OrganFeatures()
    feed(a, sorted(organs_day(2), key=lambda e: e[0]))
    feed(b, sorted(organs_day(2), key=lambda e: e[0]))
    assert a.to_state() == b.to_state()
    assert a.features(T0 + 2 * H, FACTS_70) == b.features(T0 + 2 * H, FACTS_70)
