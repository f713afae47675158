"""KDIGO acute kidney injury staging by creatinine and by urine output, as pure functions.

Source: KDIGO 2012 Clinical Practice Guideline for AKI (Kidney Int Suppl 2:1),
table 2; CLINICAL.md "Renal and venous congestion". Times are event times in
epoch seconds; nothing here reads the clock. ``None`` means unknown (missing,
stale or not assessable), never stage 0.

>>> h = 3600.0
>>> kdigo_stage(kdigo_creatinine_stage([(0.0, 1.0), (24 * h, 2.1)], at_s=25 * h),
...             kdigo_urine_output_stage([0.6] * 6))
2
"""

from __future__ import annotations

import math
from collections.abc import Sequence

HOUR_S = 3600.0
CREATININE_FRESH_S = 48 * HOUR_S
"""The latest creatinine must be at most this old at ``at_s``."""
RISE_WINDOW_S = 48 * HOUR_S
BASELINE_WINDOW_S = 7 * 24 * HOUR_S
_EPS = 1e-9  # absorbs float error at the 0.3 mg/dL and ratio bounds (1.2 - 0.9 < 0.3)


def _usable(
    history: Sequence[tuple[float, float]], at_s: float
) -> tuple[list[tuple[float, float]], tuple[float, float]] | None:
    """Values at or before ``at_s`` and the latest of them, None when none or stale."""
    previous_t = -math.inf
    for t, value in history:
        if t < previous_t:
            raise ValueError("creatinine history must be in ascending time")
        if value < 0:
            raise ValueError(f"creatinine must be >= 0, got {value}")
        previous_t = t
    usable = [(t, v) for t, v in history if t <= at_s]
    if not usable or at_s - usable[-1][0] > CREATININE_FRESH_S:
        return None
    return usable[:-1], usable[-1]


def _lowest_before(
    earlier: list[tuple[float, float]], latest_t: float, window_s: float
) -> float | None:
    values = [v for t, v in earlier if latest_t - window_s <= t]
    return min(values) if values else None


def creatinine_baseline_mg_dl(history: Sequence[tuple[float, float]], at_s: float) -> float | None:
    """Baseline creatinine: the lowest value in the 7 days before the latest value.

    The latest value itself is excluded (a baseline is a *previous* value), so one
    value alone has no baseline. None as well when the latest value at ``at_s``
    is older than 48 h. ``history`` is ``(epoch s, mg/dL)`` in ascending time.

    >>> d = 86400.0
    >>> creatinine_baseline_mg_dl([(0.0, 0.9), (3 * d, 1.1), (8 * d, 1.4)], at_s=8 * d)
    1.1
    >>> creatinine_baseline_mg_dl([(0.0, 0.9)], at_s=0.0) is None
    True
    """
    usable = _usable(history, at_s)
    if usable is None:
        return None
    earlier, (latest_t, _) = usable
    return _lowest_before(earlier, latest_t, BASELINE_WINDOW_S)


def kdigo_creatinine_stage(
    history: Sequence[tuple[float, float]], at_s: float, *, rrt_started: bool = False
) -> int | None:
    """KDIGO AKI stage (0-3) by serum creatinine at ``at_s``.

    Only values observed at or before ``at_s`` count; the newest is "latest" and
    must be at most 48 h old, else None (stale). Criteria on the latest value:

    - rise >= 0.3 mg/dL over the lowest value of the 48 h before it -> 1;
    - ratio to the baseline (lowest of the 7 days before it, see
      :func:`creatinine_baseline_mg_dl`) 1.5-1.9 -> 1, 2.0-2.9 -> 2, >= 3.0 -> 3;
    - latest >= 4.0 mg/dL -> 3, read as KDIGO's "*increase* to >= 4.0": only when
      one of the two criteria above already defines AKI (a stable 4.5 in chronic
      kidney disease is not AKI);
    - ``rrt_started`` -> 3 whatever the creatinine.

    None when neither criterion is assessable (no value in the 7 days before the
    latest); 0 when assessable and no criterion applies.

    >>> h = 3600.0
    >>> kdigo_creatinine_stage([(0.0, 1.0), (30 * h, 1.35)], at_s=31 * h)
    1
    >>> kdigo_creatinine_stage([(0.0, 1.2), (40 * h, 4.1)], at_s=41 * h)
    3
    >>> kdigo_creatinine_stage([(0.0, 1.0), (10 * h, 2.1)], at_s=70 * h) is None  # stale
    True
    """
    if rrt_started:
        return 3
    usable = _usable(history, at_s)
    if usable is None:
        return None
    earlier, (latest_t, latest) = usable
    lowest_48h = _lowest_before(earlier, latest_t, RISE_WINDOW_S)
    baseline = _lowest_before(earlier, latest_t, BASELINE_WINDOW_S)
    if baseline is None:  # the 48-h window lies inside the 7-day one
        return None
    stage = 0
    if lowest_48h is not None and latest - lowest_48h >= 0.3 - _EPS:
        stage = 1
    if baseline > 0:
        ratio = latest / baseline
        for ratio_stage, at_least in ((3, 3.0), (2, 2.0), (1, 1.5)):
            if ratio >= at_least - _EPS:
                stage = max(stage, ratio_stage)
                break
    if stage >= 1 and latest >= 4.0 - _EPS:
        stage = 3
    return stage


def _mean(rates: Sequence[float | None]) -> float | None:
    """Mean of a fully charted window, None if any hour is uncovered."""
    if any(r is None for r in rates):
        return None
    return math.fsum(r for r in rates if r is not None) / len(rates)


def kdigo_urine_output_stage(hourly_ml_kg_h: Sequence[float | None]) -> int | None:
    """KDIGO AKI stage (0-3) by weight-normalised urine output.

    ``hourly_ml_kg_h``: the last (up to) 24 hourly rates in mL/kg/h, oldest first,
    None for an hour not covered by charting; only the last 24 are used.

    Interpretation: the *mean* rate over each complete trailing window (= volume
    / weight / hours), not "every hour below". Urine is charted in lumps (a bag
    emptied every 2-4 h shows zeros then a large hour), so per-hour tests would
    both miss oliguria and invent anuria; the window mean is what a bedside
    6-h volume gives. Stage 1: 6-h mean < 0.5; stage 2: 12-h mean < 0.5;
    stage 3: 24-h mean < 0.3, or no urine at all in the last 12 h. Each window
    counts only when every hour in it is covered; an incomplete 12-h or 24-h
    window cannot raise the stage. None when the last 6 h are not all covered.

    >>> kdigo_urine_output_stage([0.8] * 6 + [0.4] * 6)  # 12-h mean 0.6, 6-h mean 0.4
    1
    >>> kdigo_urine_output_stage([None] * 12 + [0.0] * 12)  # anuria for 12 h
    3
    >>> kdigo_urine_output_stage([0.4] * 5) is None  # under 6 h charted
    True
    """
    rates = list(hourly_ml_kg_h)[-24:]
    for rate in rates:
        if rate is not None and rate < 0:
            raise ValueError(f"urine output must be >= 0 mL/kg/h, got {rate}")
    if len(rates) < 6:
        return None
    mean_6h = _mean(rates[-6:])
    if mean_6h is None:
        return None
    mean_12h = _mean(rates[-12:]) if len(rates) >= 12 else None
    mean_24h = _mean(rates) if len(rates) == 24 else None
    if (mean_24h is not None and mean_24h < 0.3) or mean_12h == 0.0:
        return 3
    if mean_12h is not None and mean_12h < 0.5:
        return 2
    return 1 if mean_6h < 0.5 else 0


def kdigo_stage(creatinine_stage: int | None, urine_output_stage: int | None) -> int | None:
    """KDIGO AKI stage: the higher known of the creatinine and urine-output stages.

    None only when both are unknown; with one unknown, the other is reported (so
    0 means "no AKI by the criterion that could be assessed").

    >>> kdigo_stage(1, None), kdigo_stage(0, 2), kdigo_stage(None, None)
    (1, 2, None)
    """
    known = [s for s in (creatinine_stage, urine_output_stage) if s is not None]
    return max(known) if known else None
