"""Perfusion, renal and venous-congestion feature groups.

Each worked example is checked against a value computed independently (by hand
or with a short numpy reference over the same scripted inputs).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from schemas.codes import Quantity
from schemas.common import SourceInfo
from schemas.context import (
    CapillaryRefill,
    Drug,
    DrugDose,
    FluidBalanceEntry,
    Infusion,
    PatientContext,
    RenalVenousDoppler,
    UrineOutput,
)
from streams.features import kdigo
from streams.features.base import PatientFacts
from streams.features.catalog import FEATURES
from streams.features.congestion import CongestionFeatures
from streams.features.perfusion import PerfusionFeatures
from streams.features.renal import RenalFeatures
from streams.features.windows import MinuteBuckets

H = 3600.0
T0 = 1_699_999_200.0  # an hour boundary (epoch s): real streams use real epochs
assert T0 % H == 0
NO_FACTS = PatientFacts()
FACTS_70 = PatientFacts(weight_kg=70.0)
SOURCE = SourceInfo(adapter="context")

Group = PerfusionFeatures | RenalFeatures | CongestionFeatures
Event = tuple[float, Quantity | PatientContext, float]


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _base(t: float) -> dict[str, Any]:
    return {"patient_id": "p1", "observed_at": _when(t), "received_at": _when(t), "source": SOURCE}


def urine(t: float, volume_ml: float, period_s: float = H) -> UrineOutput:
    return UrineOutput(**_base(t), volume_ml=volume_ml, period_start=_when(t - period_s))


def fluid(t: float, direction: str, volume_ml: float) -> FluidBalanceEntry:
    return FluidBalanceEntry(**_base(t), direction=direction, volume_ml=volume_ml)


def dose(t: float, mg: float, drug: Drug = Drug.FUROSEMIDE) -> DrugDose:
    return DrugDose(**_base(t), drug=drug, dose_mg=mg)


def infusion(t: float, rate: float, drug: Drug = Drug.FUROSEMIDE) -> Infusion:
    return Infusion(**_base(t), drug=drug, rate=rate, rate_unit="mg/h")


def rvd(t: float, pattern: str) -> RenalVenousDoppler:
    return RenalVenousDoppler(**_base(t), pattern=pattern)


def refill(t: float, seconds: float) -> CapillaryRefill:
    return CapillaryRefill(**_base(t), seconds=seconds)


def feed(group: Group, events: list[Event]) -> None:
    for at, what, value in events:
        if isinstance(what, Quantity):
            group.observe(what, at, value)
        else:
            group.observe_context(what, at)


def restored(group: Group) -> Group:
    state = json.loads(json.dumps(group.to_state(), allow_nan=False))
    return type(group).from_state(state)


@pytest.mark.parametrize(
    ("group", "organ"),
    [
        (PerfusionFeatures, "perfusion"),
        (RenalFeatures, "renal"),
        (CongestionFeatures, "congestion"),
    ],
)
def test_outputs_exactly_the_catalogue_names_all_unknown_when_empty(
    group: type[Group], organ: str
) -> None:
    names = {n for n, spec in FEATURES.items() if spec.organ == organ}
    found = group().features(T0, FACTS_70)
    assert set(found) == names
    assert all(v is None for v in found.values())


# ---- perfusion: MAP ----------------------------------------------------------------


def test_map_median_is_the_monitor_rule_feature_sample_by_sample() -> None:
    """Same as streams.monitor (the MAP rule): late ABP means dropped, median of (t-60, t]."""
    rng = random.Random(7)
    group = PerfusionFeatures()
    kept: list[tuple[float, float]] = []
    t = T0
    for _ in range(600):
        t += rng.choice([0.0, 1.0, 1.0, 2.0, 5.0, 70.0])  # repeats, gaps beyond the window
        value = rng.uniform(40, 100)
        group.observe(Quantity.ABP_MEAN, t, value)
        if not kept or t > kept[-1][0]:  # the monitor's late policy
            kept.append((t, value))
        expected = float(np.median([v for s, v in kept if t - 60 < s <= t]))
        assert group.features(t, NO_FACTS)["map_median_1min_mmhg"] == pytest.approx(expected)
        later = group.features(t + 30, NO_FACTS)["map_median_1min_mmhg"]
        window = [v for s, v in kept if t + 30 - 60 < s <= t + 30]
        assert later == (pytest.approx(float(np.median(window))) if window else None)


def test_map_median_is_unknown_without_an_abp_mean_in_the_last_minute() -> None:
    group = PerfusionFeatures()
    for s in range(30):
        group.observe(Quantity.ABP_MEAN, T0 + s, 70.0 + s)
    assert group.features(T0 + 29, NO_FACTS)["map_median_1min_mmhg"] == pytest.approx(84.5)
    assert group.features(T0 + 89, NO_FACTS)["map_median_1min_mmhg"] is None
    group.observe(Quantity.NBP_MEAN, T0 + 10, 62.0)  # a cuff never feeds the ABP median
    assert group.features(T0 + 89, NO_FACTS)["map_median_1min_mmhg"] is None


def test_a_look_up_ahead_of_the_arterial_stream_leaves_its_window_intact() -> None:
    """The patient clock can run ahead of vitals (another topic moved it)."""
    ahead, plain = PerfusionFeatures(), PerfusionFeatures()
    for s in range(0, 40):
        for group in (ahead, plain):
            group.observe(Quantity.ABP_MEAN, T0 + s, 50.0 + s)
    assert ahead.features(T0 + 90, NO_FACTS)["map_median_1min_mmhg"] == 85.0  # s = 31..39
    for group in (ahead, plain):
        group.observe(Quantity.ABP_MEAN, T0 + 45, 100.0)  # older than the look-up
    expected = float(np.median([50.0 + s for s in range(40)] + [100.0]))
    assert ahead.features(T0 + 45, NO_FACTS)["map_median_1min_mmhg"] == expected
    assert plain.features(T0 + 45, NO_FACTS)["map_median_1min_mmhg"] == expected


def test_map_prefers_a_fresh_arterial_mean_then_the_cuff_then_unknown() -> None:
    group = PerfusionFeatures()
    feed(group, [(T0, Quantity.NBP_MEAN, 72.0), (T0 + 5, Quantity.ABP_MEAN, 64.0)])
    assert group.features(T0 + 65, NO_FACTS)["map_mmhg"] == 64.0  # ABP 60 s old
    assert group.features(T0 + 66, NO_FACTS)["map_mmhg"] == 72.0  # ABP stale: cuff
    assert group.features(T0 + 1800, NO_FACTS)["map_mmhg"] == 72.0
    assert group.features(T0 + 1801, NO_FACTS)["map_mmhg"] is None


def _reference_map_history(samples: list[tuple[float, float]], at: float) -> tuple[Any, Any]:
    """Lowest 1-min median and minutes below 65 of the 60-min window, by brute force."""
    medians = []
    for i, (t, _) in enumerate(samples):
        window = [v for s, v in samples[: i + 1] if t - 60 < s <= t]
        medians.append((t, float(np.median(window))))
    first_minute = int(at // 60) - 59
    lowest = [m for t, m in medians if int(t // 60) >= first_minute and t <= at]
    below = 0.0
    for (t, m), (t_next, _) in itertools.pairwise(medians):
        if m < 65 and int(t // 60) >= first_minute and t_next <= at:
            below += min(t_next - t, 60.0)
    return (min(lowest) if lowest else None), below / 60.0


def test_map_lowest_median_and_minutes_below_65_over_the_last_hour() -> None:
    group = PerfusionFeatures()
    samples = []
    for s in range(0, 2 * 3600, 2):  # 2 h: 70, then 20 min at 58, then 75
        value = 58.0 if 3000 <= s < 4200 else (70.0 if s < 3000 else 75.0)
        samples.append((T0 + s, value))
    feed(group, [(t, Quantity.ABP_MEAN, v) for t, v in samples])
    at = T0 + 2 * 3600 - 2
    found = group.features(at, NO_FACTS)
    lowest, below = _reference_map_history(samples, at)
    assert found["map_min_60min_mmhg"] == lowest
    assert found["map_time_below_65_60min_min"] == pytest.approx(below)
    # by hand: the episode 50-70 min ended 50 min ago; its last 10 min are in the window
    assert found["map_min_60min_mmhg"] == 58.0
    assert found["map_time_below_65_60min_min"] == pytest.approx(10.0 + 30 / 60, abs=0.05)


def test_map_history_cache_matches_the_minute_buckets_at_every_second() -> None:
    rng = random.Random(3)
    group = PerfusionFeatures()
    t = T0
    for _ in range(3000):
        t += rng.choice([1.0, 1.0, 3.0, 45.0])
        group.observe(Quantity.ABP_MEAN, t, rng.uniform(50, 80))
        for at in (t, t + 0.5, t + 30):
            found = group.features(at, NO_FACTS)
            buckets: MinuteBuckets = group.map_minutes
            assert found["map_min_60min_mmhg"] == buckets.minimum(at, 3600)
            assert found["map_time_below_65_60min_min"] == pytest.approx(
                buckets.minutes_below(at, 3600)
            )


def test_map_history_is_unknown_after_an_hour_without_arterial_line() -> None:
    group = PerfusionFeatures()
    feed(group, [(T0 + s, Quantity.ABP_MEAN, 60.0) for s in range(60)])
    assert group.features(T0 + 3599, NO_FACTS)["map_min_60min_mmhg"] == 60.0
    found = group.features(T0 + 3600 + 60, NO_FACTS)
    assert found["map_min_60min_mmhg"] is None
    assert found["map_time_below_65_60min_min"] is None


def test_consecutive_low_cuff_means_count_and_reset() -> None:
    group = PerfusionFeatures()
    counts = []
    for i, value in enumerate([70.0, 60.0, 62.0, 58.0, 66.0, 64.0]):
        group.observe(Quantity.NBP_MEAN, T0 + i * 600, value)
        counts.append(group.features(T0 + i * 600, NO_FACTS)["nbp_map_low_count"])
    assert counts == [0, 1, 2, 3, 0, 1]
    at = T0 + 5 * 600
    assert group.features(at, NO_FACTS)["nbp_map_mmhg"] == 64.0
    assert group.features(at + 1801, NO_FACTS)["nbp_map_low_count"] is None  # stale
    group.observe(Quantity.NBP_MEAN, at + 2400, 60.0)  # 40 min later: a new run
    assert group.features(at + 2400, NO_FACTS)["nbp_map_low_count"] == 1


def test_heart_rate_falls_back_to_pulse_and_shock_index_uses_arterial_then_cuff() -> None:
    group = PerfusionFeatures()
    for s in range(60):
        group.observe(Quantity.PULSE_RATE, T0 + s, 100.0 + (s % 3))  # median 101
        group.observe(Quantity.ABP_SYS, T0 + s, 90.0 + (s % 2) * 10)  # median 95
    found = group.features(T0 + 59, NO_FACTS)
    assert found["heart_rate_per_min"] == 101.0
    assert found["sbp_mmhg"] == 95.0
    assert found["shock_index"] == pytest.approx(101 / 95)
    for s in range(60, 120):
        group.observe(Quantity.HEART_RATE, T0 + s, 120.0)
    group.observe(Quantity.NBP_SYS, T0 + 100, 80.0)
    found = group.features(T0 + 160, NO_FACTS)  # arterial systolic stale: cuff
    assert (found["heart_rate_per_min"], found["sbp_mmhg"], found["shock_index"]) == (
        120.0,
        80.0,
        1.5,
    )
    found = group.features(T0 + 100 + 1801, NO_FACTS)
    assert (found["heart_rate_per_min"], found["sbp_mmhg"], found["shock_index"]) == (
        None,
        None,
        None,
    )


# ---- perfusion: lactate and capillary refill -------------------------------------


def _lactates(group: PerfusionFeatures, points: Sequence[tuple[float, float]]) -> None:
    for hours, value in points:
        group.observe(Quantity.LACTATE, T0 + hours * H, value)


def _lactate_at(group: PerfusionFeatures, hours: float) -> tuple[Any, Any, Any]:
    f = group.features(T0 + hours * H, NO_FACTS)
    return f["lactate_mmol_l"], f["lactate_clearance_pct"], f["lactate_clearance_due"]


def test_lactate_clearance_pairs_the_latest_with_a_value_1_to_6_h_before() -> None:
    group = PerfusionFeatures()
    _lactates(group, [(0, 4.0), (2, 3.5)])  # Jones: 100 x (4.0 - 3.5) / 4.0 = 12.5 %
    lactate, pct, due = _lactate_at(group, 2)
    assert (lactate, due) == (3.5, 0)
    assert pct == pytest.approx(12.5)
    group = PerfusionFeatures()
    _lactates(group, [(0, 4.0), (2, 3.8)])  # 5 %: not cleared at 2 h
    assert _lactate_at(group, 2)[1:] == (pytest.approx(5.0), 1)
    group = PerfusionFeatures()
    _lactates(group, [(0, 4.0), (1.5, 3.8)])  # re-measured early without clearance
    assert _lactate_at(group, 1.5)[2] == 0  # not yet due
    assert _lactate_at(group, 2)[2] == 1
    group = PerfusionFeatures()
    _lactates(group, [(0, 4.0), (0.5, 3.0)])  # 30 min apart: no pair
    assert _lactate_at(group, 0.5)[1] is None


def test_lactate_due_without_re_measurement_after_2_h_and_not_when_normal() -> None:
    group = PerfusionFeatures()
    _lactates(group, [(0, 3.1)])
    assert _lactate_at(group, 1.99)[2] == 0
    assert _lactate_at(group, 2)[2] == 1  # decision: no re-measurement in 2 h is due
    normal = PerfusionFeatures()
    _lactates(normal, [(0, 1.8)])
    assert _lactate_at(normal, 5) == (1.8, None, 0)
    rising = PerfusionFeatures()
    _lactates(rising, [(0, 1.5), (3, 2.5)])  # rising from normal: a new initial
    lactate, pct, due = _lactate_at(rising, 3)
    assert (lactate, due) == (2.5, 0)
    assert pct == pytest.approx(-66.6667, abs=1e-3)
    assert _lactate_at(rising, 5)[2] == 1


def test_lactate_unknown_when_older_than_24_h() -> None:
    group = PerfusionFeatures()
    _lactates(group, [(0, 5.0)])
    assert _lactate_at(group, 24) == (5.0, None, 1)
    assert _lactate_at(group, 24.01) == (None, None, None)


def test_lactate_results_arriving_out_of_order_are_placed_by_specimen_time() -> None:
    in_order, late = PerfusionFeatures(), PerfusionFeatures()
    points = [(0, 4.0), (2, 3.8), (4, 3.0)]
    _lactates(in_order, points)
    _lactates(late, [points[2], points[0], points[1]])
    assert _lactate_at(in_order, 4) == _lactate_at(late, 4)
    assert _lactate_at(late, 4)[1] == pytest.approx(100 * 0.8 / 3.8)
    assert _lactate_at(late, 3) == _lactate_at(in_order, 3)  # as of a past time


def test_capillary_refill_last_charted_within_an_hour() -> None:
    group = PerfusionFeatures()
    group.observe_context(refill(T0 + 1800, 4.0), T0 + 1800)
    group.observe_context(refill(T0, 2.0), T0)  # charted late: older value
    assert group.features(T0 + 1800, NO_FACTS)["capillary_refill_s"] == 4.0
    assert group.features(T0 + 1799, NO_FACTS)["capillary_refill_s"] == 2.0
    assert group.features(T0 + 1800 + H, NO_FACTS)["capillary_refill_s"] == 4.0
    assert group.features(T0 + 1801 + H, NO_FACTS)["capillary_refill_s"] is None


# ---- renal -----------------------------------------------------------------------


def _creatinine(group: RenalFeatures, points: Sequence[tuple[float, float]]) -> None:
    for hours, value in points:
        group.observe(Quantity.CREATININE, T0 + hours * H, value)


def test_creatinine_stage_and_baseline_match_kdigo_functions_with_late_results() -> None:
    points = [(0, 0.9), (30, 1.1), (70, 1.5), (100, 2.0)]
    group = RenalFeatures()
    _creatinine(group, [points[3], points[1], points[0], points[2]])
    history = [(T0 + h * H, v) for h, v in points]
    for hours in (0, 31, 71, 100, 147, 148.5):
        f = group.features(T0 + hours * H, NO_FACTS)
        at = T0 + hours * H
        assert f["kdigo_creatinine_stage"] == kdigo.kdigo_creatinine_stage(history, at)
        assert f["creatinine_baseline_mg_dl"] == kdigo.creatinine_baseline_mg_dl(history, at)
    f = group.features(T0 + 100 * H, NO_FACTS)
    # by hand: 2.0 / baseline 0.9 = 2.2x -> stage 2; latest 2.0
    assert (f["creatinine_mg_dl"], f["creatinine_baseline_mg_dl"], f["kdigo_creatinine_stage"]) == (
        2.0,
        0.9,
        2,
    )
    assert f["kdigo_stage"] == 2  # no urine charted: creatinine stage alone
    stale = group.features(T0 + 148.5 * H, NO_FACTS)
    assert stale["creatinine_mg_dl"] is None
    assert stale["kdigo_creatinine_stage"] is None


def test_crrt_blood_flow_in_the_last_24_h_is_rrt_started_stage_3() -> None:
    """RRT makes the overall KDIGO stage 3; the creatinine criteria stay as they are."""
    group = RenalFeatures()
    _creatinine(group, [(0, 1.0), (10, 1.1)])
    assert group.features(T0 + 10 * H, NO_FACTS)["kdigo_stage"] == 0
    group.observe(Quantity.CRRT_BLOOD_FLOW, T0 + 11 * H, 0.0)  # primed, not running
    assert group.features(T0 + 11 * H, NO_FACTS)["kdigo_stage"] == 0
    group.observe(Quantity.CRRT_BLOOD_FLOW, T0 + 12 * H, 150.0)
    running = group.features(T0 + 12 * H, NO_FACTS)
    assert (running["kdigo_stage"], running["kdigo_creatinine_stage"]) == (3, 0)
    assert group.features(T0 + 36 * H, NO_FACTS)["kdigo_stage"] == 3
    later = group.features(T0 + 36.01 * H, NO_FACTS)
    assert later["kdigo_creatinine_stage"] == 0


def _hourly_urine(group: Group, volumes: Sequence[float | None], end_hours: float = 24) -> None:
    """Charted hourly volumes ending at ``end_hours`` (None = hour not charted)."""
    start = end_hours - len(volumes)
    for i, volume in enumerate(volumes):
        if volume is not None:
            t = T0 + (start + i + 1) * H
            group.observe_context(urine(t, volume), t)


def test_urine_output_per_kg_over_6_12_24_h_and_kdigo_stage() -> None:
    group = RenalFeatures()
    volumes = [40.0] * 12 + [30.0] * 6 + [14.0] * 6  # 70 kg
    _hourly_urine(group, volumes)
    f = group.features(T0 + 24 * H + 30, FACTS_70)
    assert f["urine_output_6h_ml_kg_h"] == pytest.approx(14 / 70)
    assert f["urine_output_12h_ml_kg_h"] == pytest.approx((30 * 6 + 14 * 6) / 12 / 70)
    assert f["urine_output_24h_ml_kg_h"] == pytest.approx(sum(volumes) / 24 / 70)
    assert f["urine_output_24h_ml"] == pytest.approx(sum(volumes))
    # by hand: 12-h mean 0.31 < 0.5 -> stage 2; 24-h mean 0.44 >= 0.3 -> not 3
    assert f["kdigo_urine_output_stage"] == 2
    assert f["kdigo_stage"] == 2
    rates = [v / 70 for v in volumes]
    assert f["kdigo_urine_output_stage"] == kdigo.kdigo_urine_output_stage(rates)


def test_urine_output_needs_weight_and_every_hour_charted() -> None:
    group = RenalFeatures()
    _hourly_urine(group, [50.0] * 17 + [None] + [50.0] * 6)
    f = group.features(T0 + 24 * H, NO_FACTS)
    assert f["urine_output_6h_ml_kg_h"] is None
    assert f["kdigo_urine_output_stage"] is None
    assert f["urine_output_24h_ml"] is None  # hour 18 not charted
    f = group.features(T0 + 24 * H, FACTS_70)
    assert f["urine_output_6h_ml_kg_h"] == pytest.approx(50 / 70)
    assert f["urine_output_12h_ml_kg_h"] is None
    assert f["kdigo_urine_output_stage"] == 0
    # a 3-hour bag chart covers its hours evenly
    bag = RenalFeatures()
    bag.observe_context(urine(T0 + 3 * H, 210.0, period_s=3 * H), T0 + 3 * H)
    assert bag._hourly_urine(T0 + 3 * H)[-3:] == [70.0, 70.0, 70.0]


def _dose_then_urine(hourly_ml: float) -> RenalFeatures:
    group = RenalFeatures()
    group.observe_context(dose(T0 + 20 * 60, 70.0), T0 + 20 * 60)  # 00:20
    _hourly_urine(group, [hourly_ml] * 3, end_hours=3)  # charted 01:00, 02:00, 03:00
    return group


def test_furosemide_stress_test_2_h_urine_after_the_dose() -> None:
    poor = _dose_then_urine(60.0)
    at_2h = T0 + 20 * 60 + 2 * H
    before = poor.features(at_2h - 1, FACTS_70)
    assert before["furosemide_stress_urine_2h_ml"] is None
    assert before["furosemide_stress_nonresponse"] is None
    f = poor.features(at_2h, FACTS_70)
    # by hand: 40 min of hour 0 + hour 1 + 20 min of hour 2 at 60 mL/h = 120 mL
    assert f["furosemide_stress_urine_2h_ml"] == pytest.approx(120.0)
    assert f["furosemide_stress_nonresponse"] == 1
    good = _dose_then_urine(150.0)
    f = good.features(at_2h, FACTS_70)
    assert f["furosemide_stress_urine_2h_ml"] == pytest.approx(300.0)
    assert f["furosemide_stress_nonresponse"] == 0
    assert good.features(T0 + 20 * 60 + 24 * H + 1, FACTS_70)["furosemide_stress_nonresponse"] is (
        None
    )


def test_furosemide_stress_test_waits_for_the_hours_to_be_charted_and_records_dose() -> None:
    group = RenalFeatures()
    group.observe_context(dose(T0 + 20 * 60, 70.0), T0 + 20 * 60)
    _hourly_urine(group, [60.0] * 2, end_hours=2)  # hour 2 (02:00-03:00) not charted yet
    at_2h = T0 + 20 * 60 + 2 * H
    assert group.features(at_2h, FACTS_70)["furosemide_stress_nonresponse"] is None
    test = group.furosemide_stress_test(at_2h, FACTS_70)
    assert test is not None
    assert (test.dose_mg_kg, test.standard_dose) == (1.0, True)
    exposed = PatientFacts(weight_kg=70.0, diuretic_exposed=True)
    assert group.furosemide_stress_test(at_2h, exposed).standard_dose is False  # type: ignore[union-attr]
    assert group.furosemide_stress_test(at_2h, NO_FACTS).standard_dose is None  # type: ignore[union-attr]
    other = RenalFeatures()
    other.observe_context(dose(T0, 40.0, drug=Drug.NOREPINEPHRINE), T0)  # not furosemide
    assert other.furosemide_stress_test(T0 + 3 * H, FACTS_70) is None


def test_crrt_liberation_signal_by_24_h_urine_with_and_without_diuretics() -> None:
    crrt = PatientFacts(weight_kg=70.0, on_crrt=True)
    at = T0 + 24 * H
    group = RenalFeatures()
    _hourly_urine(group, [20.0] * 24)  # 480 mL
    assert group.features(at, FACTS_70)["crrt_liberation_signal"] is None  # not on CRRT
    assert group.features(at, crrt)["crrt_liberation_signal"] == 1
    group.observe_context(dose(T0 + 5 * H, 40.0), T0 + 5 * H)  # furosemide: 2000 mL needed
    assert group.features(at, crrt)["crrt_liberation_signal"] == 0
    assert group.features(T0 + 29 * H + 1, crrt)["crrt_liberation_signal"] is None  # uncharted
    lots = RenalFeatures()
    _hourly_urine(lots, [90.0] * 24)  # 2160 mL
    lots.observe_context(infusion(T0 - 10 * H, 10.0), T0 - 10 * H)
    lots.observe_context(infusion(T0 + H, 0.0), T0 + H)  # ran into the window
    assert lots.furosemide_given(at)
    assert lots.features(at, crrt)["crrt_liberation_signal"] == 1
    assert not lots.furosemide_given(T0 + 25 * H + 1)


def test_crrt_liberation_unknown_without_24_charted_hours() -> None:
    group = RenalFeatures()
    _hourly_urine(group, [None] + [50.0] * 23)
    crrt = PatientFacts(weight_kg=70.0, on_crrt=True)
    assert group.features(T0 + 24 * H, crrt)["crrt_liberation_signal"] is None


# ---- congestion ------------------------------------------------------------------


def test_cvp_median_and_trend_match_numpy_references() -> None:
    rng = np.random.default_rng(5)
    group = CongestionFeatures()
    times = T0 + np.arange(0, 3 * 3600, 1.0)
    values = 6.0 + 4.0 * (times - T0) / (3 * 3600) + rng.normal(0, 1, len(times))
    for t, v in zip(times, values, strict=True):
        group.observe(Quantity.CVP_MEAN, float(t), float(v))
    at = float(times[-1]) + 0.5
    f = group.features(at, NO_FACTS)
    recent = values[(times > at - 300) & (times <= at)]
    assert f["cvp_median_5min_mmhg"] == pytest.approx(float(np.median(recent)))
    minute = int(at // 60)
    minutes = np.arange(minute - 60, minute)
    means = [values[(times // 60) == m].mean() for m in minutes]
    slope = np.polyfit(minutes, means, 1)[0] * 60
    assert f["cvp_trend_60min_mmhg_h"] == pytest.approx(slope)
    assert slope == pytest.approx(4 / 3, abs=0.3)  # the simulated drift


def test_cvp_trend_needs_10_minutes_and_current_data() -> None:
    group = CongestionFeatures()
    for s in range(0, 9 * 60 + 60, 10):
        group.observe(Quantity.CVP, T0 + s, 8.0 + s / 600)
    assert group.features(T0 + 9 * 60 + 59, NO_FACTS)["cvp_trend_60min_mmhg_h"] is None  # 9 min
    # 10 complete minutes, CVP + 1 mmHg every 10 min: 6 mmHg/h
    assert group.features(T0 + 600, NO_FACTS)["cvp_trend_60min_mmhg_h"] == pytest.approx(6.0)
    group.observe(Quantity.CVP, T0 + 599, 30.0)  # a late sample of a complete minute
    minute_means = [8 + (60 * m + 25) / 600 for m in range(9)]
    minute_means.append((sum(8 + (540 + s) / 600 for s in range(0, 60, 10)) + 30) / 7)
    slope = np.polyfit(np.arange(10), minute_means, 1)[0] * 60
    assert group.features(T0 + 600, NO_FACTS)["cvp_trend_60min_mmhg_h"] == pytest.approx(slope)
    stale = group.features(T0 + 599 + 300, NO_FACTS)  # no CVP in 5 min
    assert stale["cvp_median_5min_mmhg"] is None
    assert stale["cvp_trend_60min_mmhg_h"] is None


def test_cvp_mean_channel_wins_and_plain_cvp_takes_over_when_it_stops() -> None:
    group = CongestionFeatures()
    for s in range(600):
        group.observe(Quantity.CVP, T0 + s, 20.0)
        group.observe(Quantity.CVP_MEAN, T0 + s, 10.0)
    assert group.features(T0 + 599, NO_FACTS)["cvp_median_5min_mmhg"] == 10.0
    assert len(group.cvp.median) <= 1  # plain CVP not kept while the mean runs
    for s in range(600, 1000):
        group.observe(Quantity.CVP, T0 + s, 20.0)
    assert group.features(T0 + 898, NO_FACTS)["cvp_median_5min_mmhg"] == 10.0
    assert group.features(T0 + 899, NO_FACTS)["cvp_median_5min_mmhg"] == 20.0


def test_fluid_balance_24_h_intake_minus_outputs_urine_and_crrt_net_uf() -> None:
    group = CongestionFeatures()
    feed(
        group,
        [
            (T0 + 2 * H, fluid(T0 + 2 * H, "in", 1000.0), 0),
            (T0 + 5 * H, fluid(T0 + 5 * H, "in", 2000.0), 0),
            (T0 + 6 * H, fluid(T0 + 6 * H, "out", 200.0), 0),  # drain
        ],
    )
    _hourly_urine(group, [100.0] * 10, end_hours=10)  # 1000 mL
    for minute in range(0, 5 * 60 + 1):  # net UF 100 mL/h for 5 h, a rate every minute
        group.observe(Quantity.CRRT_NET_UF_RATE, T0 + 3 * H + minute * 60, 100.0)
    at = T0 + 10 * H
    # by hand: 3000 in - 200 out - 1000 urine - 500 UF (+ 100 mL/h held 10 min after 8 h)
    expected = 3000 - 200 - 1000 - 500 - 100 * 600 / H
    assert group.features(at, NO_FACTS)["fluid_balance_24h_ml"] == pytest.approx(expected)
    # 26 h: the first intake (t = 2 h) has left the window, the 5-h one has not
    later = group.features(T0 + 26 * H + 30 * 60, NO_FACTS)["fluid_balance_24h_ml"]
    # urine of hours 3-10 (hour 2 half), UF 3 h-8 h (all), entries exact to the minute
    assert later == pytest.approx(2000 - 200 - 750 - 500 - 100 / 6)


def test_fluid_balance_unknown_without_a_charted_intake_or_output_in_24_h() -> None:
    group = CongestionFeatures()
    _hourly_urine(group, [100.0] * 4, end_hours=4)
    group.observe(Quantity.CRRT_NET_UF_RATE, T0, 100.0)
    assert group.features(T0 + 4 * H, NO_FACTS)["fluid_balance_24h_ml"] is None
    group.observe_context(fluid(T0 + 3 * H, "in", 500.0), T0 + 3 * H)
    assert group.features(T0 + 4 * H, NO_FACTS)["fluid_balance_24h_ml"] == pytest.approx(
        500 - 400 - 100 * 600 / H
    )
    assert group.features(T0 + 27 * H, NO_FACTS)["fluid_balance_24h_ml"] is None


def test_renal_venous_doppler_grade_out_of_order_and_stale() -> None:
    group = CongestionFeatures()
    group.observe_context(rvd(T0 + 6 * H, "monophasic_discontinuous"), T0 + 6 * H)
    group.observe_context(rvd(T0, "continuous"), T0)  # charted late
    f = group.features(T0 + 6 * H, NO_FACTS)
    assert (f["rvd_grade"], f["rvd_discontinuous"]) == (2, 1)
    f = group.features(T0 + 3 * H, NO_FACTS)
    assert (f["rvd_grade"], f["rvd_discontinuous"]) == (0, 0)
    f = group.features(T0 + 30 * H + 1, NO_FACTS)
    assert (f["rvd_grade"], f["rvd_discontinuous"]) == (None, None)


def _congestion(rise_per_h: float | None, pattern: str | None) -> Any:
    group = CongestionFeatures()
    if rise_per_h is not None:
        for s in range(0, 3600 + 60, 5):
            group.observe(Quantity.CVP_MEAN, T0 + s, 10.0 + rise_per_h * s / 3600)
    if pattern is not None:
        group.observe_context(rvd(T0 + 3000, pattern), T0 + 3000)
    return group.features(T0 + 3660, NO_FACTS)["cvp_rising_with_discontinuous_rvd"]


@pytest.mark.parametrize(
    ("rise_per_h", "pattern", "expected"),
    [
        (3.0, "biphasic_discontinuous", 1),
        (3.0, "monophasic_discontinuous", 1),
        (0.5, "monophasic_discontinuous", 0),  # CVP not rising by > 1 mmHg/h
        (-2.0, "biphasic_discontinuous", 0),
        (3.0, "continuous", 0),
        (3.0, None, None),  # RVD unknown could make it 1
        (None, "biphasic_discontinuous", None),  # CVP unknown could make it 1
        (None, "continuous", 0),  # known false whatever CVP does
        (0.5, None, 0),
    ],
)
def test_cvp_rising_while_rvd_discontinuous(
    rise_per_h: float | None, pattern: str | None, expected: int | None
) -> None:
    assert _congestion(rise_per_h, pattern) == expected


# ---- whole-patient streams: state, determinism, memory ----------------------------


def patient_stream(hours: float, seed: int = 1) -> Iterator[Event]:
    """A realistic patient: 1 Hz vitals, CRRT each minute, hourly charting, late labs."""
    rng = random.Random(seed)
    pending_labs: list[tuple[float, Quantity, float]] = []
    cap = 80.0
    for s in range(int(hours * 3600)):
        t = T0 + s
        cap = min(95.0, max(45.0, cap + rng.gauss(0, 0.3)))
        yield t, Quantity.ABP_MEAN, cap
        yield t, Quantity.ABP_SYS, cap + 40
        yield t, Quantity.HEART_RATE, 95 + rng.gauss(0, 3)
        yield t, Quantity.CVP_MEAN, 10 + (s / 3600) * 0.5 + rng.gauss(0, 1)
        if s % 5 == 0:
            yield t, Quantity.PULSE_RATE, 96 + rng.gauss(0, 3)
            yield t, Quantity.CVP, 11.0
        if s % 600 == 0:
            yield t, Quantity.NBP_MEAN, cap + rng.gauss(0, 5)
            yield t, Quantity.NBP_SYS, cap + 38
        if s % 60 == 0:
            yield t, Quantity.CRRT_BLOOD_FLOW, 150.0 if s > 6 * 3600 else 0.0
            yield t, Quantity.CRRT_NET_UF_RATE, 80.0 if s > 6 * 3600 else 0.0
        if s % 3600 == 0 and s:
            yield t, urine(t, rng.uniform(10, 60)), 0
            yield t, fluid(t, "in", rng.uniform(50, 200)), 0
        if s % 1800 == 900:
            yield t, refill(t, rng.uniform(1, 5)), 0
        if s % (6 * 3600) == 7000:
            yield t, rvd(t, rng.choice(["continuous", "biphasic_discontinuous"])), 0
            yield t, dose(t, 80.0), 0
            yield t, infusion(t, 5.0), 0
        if s % (4 * 3600) == 100:  # drawn now, resulted 40 min later
            pending_labs.append((t, Quantity.LACTATE, rng.uniform(1.5, 5.0)))
            pending_labs.append((t, Quantity.CREATININE, rng.uniform(0.8, 3.0)))
        for lab in [lab for lab in pending_labs if t - lab[0] >= 2400]:
            yield lab
            pending_labs.remove(lab)


def _facts(at: float) -> PatientFacts:
    return PatientFacts(weight_kg=72.0, on_crrt=at > T0 + 6 * H)


def _run(
    groups: list[Group], events: Iterator[Event], every_s: float = 7.0
) -> list[dict[str, Any]]:
    out = []
    next_at = T0
    for at, what, value in events:
        for group in groups:
            feed(group, [(at, what, value)])
        if at >= next_at:
            out.append({k: v for g in groups for k, v in g.features(at, _facts(at)).items()})
            next_at = at + every_s
    return out


def test_state_round_trip_mid_stream_gives_identical_features() -> None:
    events = list(patient_stream(hours=9))
    cut_points = {len(events) // 5, len(events) // 2, (4 * len(events)) // 5}
    straight: list[Group] = [PerfusionFeatures(), RenalFeatures(), CongestionFeatures()]
    bounced: list[Group] = [PerfusionFeatures(), RenalFeatures(), CongestionFeatures()]
    compared = 0
    for i, (at, what, value) in enumerate(events):
        if i in cut_points:
            bounced = [restored(g) for g in bounced]
        for group in (*straight, *bounced):
            feed(group, [(at, what, value)])
        if i % 97 == 0 or i in cut_points:
            expect = [g.features(at, _facts(at)) for g in straight]
            assert [g.features(at, _facts(at)) for g in bounced] == expect
            compared += 1
    assert compared > 1000
    for a, b in zip(straight, bounced, strict=True):
        assert json.dumps(a.to_state(), sort_keys=True) == json.dumps(b.to_state(), sort_keys=True)


def test_same_inputs_give_the_same_features() -> None:
    first = _run([PerfusionFeatures(), RenalFeatures(), CongestionFeatures()], patient_stream(3))
    again = _run([PerfusionFeatures(), RenalFeatures(), CongestionFeatures()], patient_stream(3))
    assert first == again
    last = first[-1]
    assert last["map_median_1min_mmhg"] is not None
    assert last["fluid_balance_24h_ml"] is not None
    assert all(not isinstance(v, float) or math.isfinite(v) for row in first for v in row.values())


def test_a_day_at_1_hz_keeps_state_bounded() -> None:
    groups: list[Group] = [PerfusionFeatures(), RenalFeatures(), CongestionFeatures()]
    sizes = []
    for at, what, value in patient_stream(hours=30):
        for group in groups:
            feed(group, [(at, what, value)])
        if at >= T0 + 27 * H and (at - T0) % 600 == 0 and what is Quantity.ABP_MEAN:
            sizes.append(sum(len(json.dumps(g.to_state())) for g in groups))
    perfusion, renal, congestion = groups
    assert isinstance(perfusion, PerfusionFeatures)
    assert isinstance(renal, RenalFeatures)
    assert isinstance(congestion, CongestionFeatures)
    assert len(perfusion.abp_mean) <= 61
    assert len(perfusion.map_minutes.buckets) <= 62
    assert len(perfusion.lactate) <= 8
    assert len(renal.urine.volume) <= 27
    assert len(renal.creatinine) <= 7 * 6 + 1
    assert len(congestion.cvp_mean.median) <= 301
    assert len(congestion.cvp_mean.minutes.buckets) <= 62
    assert len(congestion.crrt_net_uf.hours) <= 28
    assert len(congestion.fluid_in) <= 27
    assert len(sizes) >= 18
    assert max(sizes) < 40_000  # random full-precision floats; device values are shorter
    assert max(sizes) - min(sizes) < 1_500  # flat once the horizons are full
