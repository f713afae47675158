"""KDIGO 2012 AKI staging by creatinine and urine output: worked examples and edges."""

from __future__ import annotations

import random

import pytest

from streams.features.kdigo import (
    creatinine_baseline_mg_dl,
    kdigo_creatinine_stage,
    kdigo_stage,
    kdigo_urine_output_stage,
)

H = 3600.0
DAY = 24 * H
T0 = 1_700_000_000.0  # an epoch time, so nothing depends on t starting at 0


def _history(*points: tuple[float, float]) -> list[tuple[float, float]]:
    """(hours after T0, mg/dL) -> (epoch s, mg/dL)."""
    return [(T0 + hours * H, value) for hours, value in points]


# --- creatinine -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "at_hours", "stage"),
    [
        (((0, 1.0), (30, 1.35)), 31, 1),  # rise 0.35 within 48 h
        (((0, 1.0), (24, 2.1)), 24, 2),  # 2.1x baseline
        (((0, 1.2), (40, 4.1)), 41, 3),  # >= 3x and >= 4.0
        (((0, 0.9), (20, 1.2)), 20, 1),  # rise exactly 0.3 (float 1.2 - 0.9 < 0.3)
        (((0, 1.0), (30, 1.29)), 31, 0),  # rise 0.29, ratio 1.29
        (((0, 0.8), (100, 1.2)), 101, 1),  # ratio 1.5 within 7 days, no 48-h value
        (((0, 0.8), (100, 1.19)), 101, 0),
        (((0, 1.0), (100, 1.99)), 101, 1),
        (((0, 1.0), (100, 2.0)), 101, 2),
        (((0, 1.0), (100, 2.99)), 101, 2),
        (((0, 1.0), (100, 3.0)), 101, 3),
        (((0, 2.8), (36, 4.2)), 36, 3),  # rise 1.4 to >= 4.0 (ratio only 1.5)
        (((0, 4.4), (24, 4.5)), 24, 0),  # stable CKD at 4.5: not AKI
        (((0, 1.0), (12, 1.6), (30, 1.1)), 30, 0),  # recovered: latest is what counts
    ],
)
def test_creatinine_stage_worked_examples(
    points: tuple[tuple[float, float], ...], at_hours: float, stage: int
) -> None:
    assert kdigo_creatinine_stage(_history(*points), T0 + at_hours * H) == stage


def test_rise_uses_only_the_48_hours_before_the_latest_value() -> None:
    """1.0 at day 0, 1.2 at day 3, 1.45 at day 4: rise 0.25 in 48 h, ratio 1.45 in 7 days."""
    history = _history((0, 1.0), (72, 1.2), (96, 1.45))
    assert kdigo_creatinine_stage(history, T0 + 96 * H) == 0
    assert creatinine_baseline_mg_dl(history, T0 + 96 * H) == 1.0


def test_baseline_is_the_lowest_of_the_7_days_before_the_latest() -> None:
    history = _history((0, 0.6), (72, 0.9), (8 * 24, 1.1), (9 * 24, 1.4))
    assert creatinine_baseline_mg_dl(history, T0 + 9 * DAY) == 0.9  # 0.6 is 9 days old
    assert kdigo_creatinine_stage(history, T0 + 9 * DAY) == 1  # rise 0.3 in 48 h; ratio 1.56


def test_values_after_at_s_are_ignored() -> None:
    history = _history((0, 1.0), (10, 1.1), (20, 3.5))
    assert kdigo_creatinine_stage(history, T0 + 15 * H) == 0
    assert creatinine_baseline_mg_dl(history, T0 + 15 * H) == 1.0


def test_stale_latest_value_is_unknown() -> None:
    history = _history((0, 1.0), (10, 2.1))
    assert kdigo_creatinine_stage(history, T0 + 58 * H) == 2  # exactly 48 h old
    assert kdigo_creatinine_stage(history, T0 + 58 * H + 1) is None
    assert creatinine_baseline_mg_dl(history, T0 + 58 * H + 1) is None


def test_a_single_value_cannot_be_staged() -> None:
    assert kdigo_creatinine_stage(_history((0, 3.9)), T0 + H) is None
    assert creatinine_baseline_mg_dl(_history((0, 3.9)), T0 + H) is None


def test_no_values_is_unknown_and_rrt_is_stage_3_regardless() -> None:
    assert kdigo_creatinine_stage([], T0) is None
    assert kdigo_creatinine_stage([], T0, rrt_started=True) == 3
    assert kdigo_creatinine_stage(_history((0, 1.0), (12, 1.0)), T0 + 12 * H) == 0
    assert kdigo_creatinine_stage(_history((0, 1.0), (12, 1.0)), T0, rrt_started=True) == 3


def test_unordered_history_is_refused() -> None:
    with pytest.raises(ValueError, match="ascending"):
        kdigo_creatinine_stage(_history((10, 1.0), (0, 1.2)), T0 + 12 * H)


# --- urine output ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("hourly", "stage"),
    [
        ([0.4] * 6, 1),
        ([0.8] * 6 + [0.4] * 6, 1),  # 12-h mean 0.6
        ([0.4] * 12, 2),
        ([0.2] * 24, 3),
        ([0.0] * 12, 3),  # anuria for 12 h
        ([0.5] * 24, 0),  # exactly 0.5 is not < 0.5
        ([0.3] * 24, 2),  # exactly 0.3 over 24 h: stage 2 by the 12-h window
        ([0.0, 0.0, 1.4] * 2, 1),  # lumpy charting: mean 0.47
        ([0.0, 0.0, 1.6] * 2, 0),  # mean 0.53, although 4 of 6 hours read 0
        ([0.0] * 6 + [1.0] * 6, 0),  # recovered: 6-h mean 1.0, 12-h mean 0.5
        ([None] * 18 + [0.45] * 6, 1),  # 12/24-h windows incomplete: no higher stage
        ([None] * 6 + [0.0] * 18, 3),  # anuria 12 h even with 24 h incomplete
        ([None] + [0.2] * 23, 2),  # a gap in the 24 h: stage 3 not assessable
    ],
)
def test_urine_output_stage_worked_examples(hourly: list[float | None], stage: int) -> None:
    assert kdigo_urine_output_stage(hourly) == stage


@pytest.mark.parametrize(
    "hourly",
    [
        [],
        [0.1] * 5,
        [0.4] * 5 + [None],
        [0.0] * 20 + [None] + [0.0] * 3,
    ],
)
def test_urine_output_without_6_charted_hours_is_unknown(hourly: list[float | None]) -> None:
    assert kdigo_urine_output_stage(hourly) is None


def test_urine_output_uses_only_the_last_24_hours() -> None:
    assert kdigo_urine_output_stage([0.0] * 24 + [0.6] * 24) == 0


def test_negative_urine_output_is_refused() -> None:
    with pytest.raises(ValueError, match="urine"):
        kdigo_urine_output_stage([0.5] * 5 + [-0.1])


# --- combined -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("by_creatinine", "by_urine", "stage"),
    [(None, None, None), (1, None, 1), (None, 2, 2), (0, 0, 0), (3, 1, 3), (0, None, 0)],
)
def test_kdigo_stage_is_the_highest_known(
    by_creatinine: int | None, by_urine: int | None, stage: int | None
) -> None:
    assert kdigo_stage(by_creatinine, by_urine) == stage


# --- properties over plausible ranges (seeded, no hypothesis) -------------------


def test_all_unknown_inputs_give_unknown() -> None:
    assert kdigo_creatinine_stage([], T0) is None
    assert creatinine_baseline_mg_dl([], T0) is None
    assert kdigo_urine_output_stage([None] * 24) is None
    assert kdigo_stage(None, None) is None


def test_never_raises_and_stays_in_range_for_plausible_inputs() -> None:
    rng = random.Random(20240611)
    for _ in range(2000):
        times = sorted(T0 + rng.uniform(0, 10 * DAY) for _ in range(rng.randint(0, 12)))
        history = [(t, rng.uniform(0.2, 12.0)) for t in times]
        at_s = T0 + rng.uniform(0, 11 * DAY)
        by_creatinine = kdigo_creatinine_stage(history, at_s)
        assert by_creatinine in (None, 0, 1, 2, 3)
        baseline = creatinine_baseline_mg_dl(history, at_s)
        assert (baseline is None) == (by_creatinine is None)
        hourly = [
            None if rng.random() < 0.05 else rng.uniform(0.0, 3.0)
            for _ in range(rng.randint(0, 30))
        ]
        by_urine = kdigo_urine_output_stage(hourly)
        assert by_urine in (None, 0, 1, 2, 3)
        combined = kdigo_stage(by_creatinine, by_urine)
        assert combined is None or combined >= max(by_creatinine or 0, by_urine or 0)
