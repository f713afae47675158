"""Brain oxygenation features: NIRS regional saturation (rSO2) per side, baseline, NSE.

Source: CLINICAL.md "Brain oxygenation (NIRS rSO2)": absolute rSO2 < 50 % (and the
area under 50 %), relative drop > 20 % from the patient's baseline (Deschamps
2013, Can J Anesth 60:737; baseline = median of the first 10 stable minutes, or
set by a clinician or the device), left/right asymmetry (> 10 points,
*unverified*), and NSE shown beside rSO2 (Zhang 2025).

Inputs: ``Quantity.RSO2_LEFT`` / ``RSO2_RIGHT`` (NIRS topic, 1 Hz or every 5 s),
``RSO2_BASELINE_LEFT`` / ``RSO2_BASELINE_RIGHT`` (a baseline the device, or a
clinician through the device, sets) and ``Quantity.NSE`` (labs).
"""

from __future__ import annotations

import statistics
from typing import Any, ClassVar, Self

from schemas.codes import Quantity
from schemas.context import PatientContext
from streams.features.base import Features, PatientFacts
from streams.features.windows import DAY_S, MinuteBuckets, SparseSeries
from streams.rolling import RollingMedian

SIDE_MEDIAN_WIDTH_S = 15.0
"""Each side's value is the median of its samples in the 15 s ending at its latest sample."""
SIDE_STALE_S = 30.0
"""A side is unknown once its latest sample is older than this (a 5-s device still
fills a 15-s window with 3 samples; 30 s tolerates one or two lost samples)."""
AREA_BELOW_PCT = 50.0
AREA_WINDOW_S = 3600.0
AREA_MAX_HOLD_S = 10.0
"""A sample stands for at most 10 s in the area under 50 % (longer gaps are not counted)."""
BASELINE_MINUTES = 10
BASELINE_MIN_SAMPLES_PER_MINUTE = 3
"""A minute counts towards the baseline when it holds at least 3 samples (15 s at 5 s)."""
BASELINE_STABLE_POINTS = 5.0
"""Stable: each of the 10 minute means lies within +/- 5 points of their median."""
NSE_MAX_AGE_S = 7 * DAY_S

_SIDES = ("left", "right")
_VALUE_OF = {Quantity.RSO2_LEFT: "left", Quantity.RSO2_RIGHT: "right"}
_BASELINE_OF = {Quantity.RSO2_BASELINE_LEFT: "left", Quantity.RSO2_BASELINE_RIGHT: "right"}


class _Side:
    """One NIRS channel: 15-s median, per-minute aggregates, baselines."""

    def __init__(self) -> None:
        self.median = RollingMedian(SIDE_MEDIAN_WIDTH_S)
        self.minutes = MinuteBuckets(60, below=AREA_BELOW_PCT, max_hold_s=AREA_MAX_HOLD_S)
        self.last_t: float | None = None
        self.device_baseline: float | None = None
        self.computed_baseline: float | None = None
        # cache of the 60-min area: (at minute, last sample minute) -> area, covered minutes
        self._area_key: tuple[int, int] | None = None
        self._area_past: tuple[float, int] = (0.0, 0)

    def add(self, t: float, value: float) -> None:
        previous_minute = None if self.last_t is None else int(self.last_t // 60)
        self.median.update(t, value)
        self.minutes.add(t, value)
        self.last_t = t
        minute = int(t // 60)
        new_minute = previous_minute is not None and minute > previous_minute
        if self.computed_baseline is None and new_minute:
            self.computed_baseline = _stable_baseline(self.minutes, minute)

    def value(self, at_s: float) -> float | None:
        if self.last_t is None or at_s - self.last_t > SIDE_STALE_S:
            return None
        return self.median.get()

    @property
    def baseline(self) -> float | None:
        return self.device_baseline if self.device_baseline is not None else self.computed_baseline

    def area_below_60min(self, at_s: float) -> float | None:
        """Area under 50 % over the last 60 min (%.min); None with no sample in it.

        The minutes before the last sample's minute no longer change, so their
        sum is cached per (evaluation minute, last sample minute); the last
        sample's minute is added live.
        """
        if self.last_t is None:
            return None
        at_minute = int(at_s // 60)
        last_minute = int(self.last_t // 60)
        first = int((at_s - AREA_WINDOW_S) // 60) + 1
        key = (at_minute, last_minute)
        if key != self._area_key:
            area, covered = 0.0, 0
            for k, b in self.minutes.buckets.items():
                if first <= k <= at_minute and k != last_minute:
                    area += b[4]
                    covered += 1 if b[0] else 0
            self._area_key, self._area_past = key, (area, covered)
        area, covered = self._area_past
        if first <= last_minute <= at_minute:
            live = self.minutes.buckets.get(last_minute)
            if live is not None:
                area += live[4]
                covered += 1 if live[0] else 0
        return area if covered else None

    def to_state(self) -> dict[str, Any]:
        return {
            "med": self.median.to_state(),
            "min": self.minutes.to_state(),
            "t": self.last_t,
            "dev": self.device_baseline,
            "base": self.computed_baseline,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Side:
        side = cls()
        side.median = RollingMedian.from_state(state["med"])
        side.minutes = MinuteBuckets.from_state(state["min"])
        side.last_t = state["t"]
        side.device_baseline = state["dev"]
        side.computed_baseline = state["base"]
        return side


def _stable_baseline(minutes: MinuteBuckets, current_minute: int) -> float | None:
    """Median of the 10 complete minutes before ``current_minute`` if they are stable.

    Stable (Deschamps 2013 asks for "10 stable minutes" without a number; ours is
    *unverified*): all 10 consecutive minutes hold >= 3 samples and every
    minute mean is within +/- 5 points of the median of the 10 means.

    >>> m = MinuteBuckets(60)
    >>> for s in range(0, 660):
    ...     m.add(float(s), 70.0 + (s // 60) % 2)  # minute means 70, 71, 70, ...
    >>> _stable_baseline(m, 11)
    70.5
    """
    means: list[float] = []
    for k in range(current_minute - BASELINE_MINUTES, current_minute):
        bucket = minutes.buckets.get(k)
        if bucket is None or bucket[0] < BASELINE_MIN_SAMPLES_PER_MINUTE:
            return None
        means.append(bucket[1] / bucket[0])
    median = statistics.median(means)
    if all(abs(m - median) <= BASELINE_STABLE_POINTS for m in means):
        return float(median)
    return None


class BrainFeatures:
    """NIRS rSO2 features per side, baseline drop, asymmetry, area under 50 %, NSE.

    - ``rso2_left_pct`` / ``rso2_right_pct``: median of the side's samples in the
      15 s ending at its latest sample (the 15-s duration of Deschamps 2013),
      None once that sample is > 30 s old. ``rso2_min_pct``: the lower known side.
    - Baseline per side: the device's (or clinician's, sent through the device)
      ``RSO2_BASELINE_*`` when sent, else the median of the minute means of the
      first 10 stable minutes (see :func:`_stable_baseline`), frozen once found.
    - ``rso2_drop_from_baseline_pct``: ``100 x (baseline - current) / baseline``,
      the larger of the two sides; *not* clamped at 0 (negative = above baseline;
      the rule compares > 20).
    - ``rso2_asymmetry_points``: ``|left - right|`` when both sides are known.
    - ``rso2_area_below_50_60min_pct_min``: area under 50 % over the last 60 min
      (points x minutes), computed per side and the larger reported (a dip on
      either side counts fully; dips of the two sides are not added). None when
      neither side has a sample in the last 60 min.
    - ``nse_ng_ml``: latest neuron-specific enolase within 7 days.

    References: CLINICAL.md "Brain oxygenation (NIRS rSO2)"; Deschamps 2013.

    >>> b = BrainFeatures()
    >>> for s in range(0, 11 * 60 + 1):  # 11 stable minutes at 70 % both sides
    ...     b.observe(Quantity.RSO2_LEFT, float(s), 70.0)
    ...     b.observe(Quantity.RSO2_RIGHT, float(s), 68.0)
    >>> for s in range(661, 721):  # then the left side falls to 45 % for a minute
    ...     b.observe(Quantity.RSO2_LEFT, float(s), 45.0)
    ...     b.observe(Quantity.RSO2_RIGHT, float(s), 68.0)
    >>> f = b.features(720.0, PatientFacts())
    >>> f["rso2_baseline_left_pct"], f["rso2_left_pct"], f["rso2_min_pct"]
    (70.0, 45.0, 45.0)
    >>> round(f["rso2_drop_from_baseline_pct"], 1), f["rso2_asymmetry_points"]
    (35.7, 23.0)
    >>> round(f["rso2_area_below_50_60min_pct_min"], 2)  # 5 points x 59 s
    4.92
    >>> b.features(720.0 + 31, PatientFacts())["rso2_left_pct"] is None  # stale
    True
    """

    quantities: ClassVar[frozenset[Quantity]] = frozenset(
        {
            Quantity.NSE,
            Quantity.RSO2_BASELINE_LEFT,
            Quantity.RSO2_BASELINE_RIGHT,
            Quantity.RSO2_LEFT,
            Quantity.RSO2_RIGHT,
        }
    )
    """The measurements this group reads (the caller routes only these to it)."""

    def __init__(self) -> None:
        self.sides: dict[str, _Side] = {side: _Side() for side in _SIDES}
        self.nse = SparseSeries(horizon_s=NSE_MAX_AGE_S)

    def observe(self, quantity: Quantity, at_s: float, value: float) -> None:
        side = _VALUE_OF.get(quantity)
        if side is not None:
            self.sides[side].add(at_s, value)
            return
        side = _BASELINE_OF.get(quantity)
        if side is not None:
            if 0.0 < value <= 100.0:
                self.sides[side].device_baseline = value
            return
        if quantity is Quantity.NSE:
            self.nse.insert(at_s, value)

    def observe_context(self, event: PatientContext, at_s: float) -> None:
        """No context event feeds the brain features."""

    def features(self, at_s: float, facts: PatientFacts) -> Features:
        left, right = self.sides["left"], self.sides["right"]
        value_left, value_right = left.value(at_s), right.value(at_s)
        known = [v for v in (value_left, value_right) if v is not None]
        drops = [
            100.0 * (side.baseline - value) / side.baseline
            for side, value in ((left, value_left), (right, value_right))
            if value is not None and side.baseline is not None and side.baseline > 0
        ]
        areas = [
            a for a in (left.area_below_60min(at_s), right.area_below_60min(at_s)) if a is not None
        ]
        return {
            "rso2_left_pct": value_left,
            "rso2_right_pct": value_right,
            "rso2_min_pct": min(known) if known else None,
            "rso2_baseline_left_pct": left.baseline,
            "rso2_baseline_right_pct": right.baseline,
            "rso2_drop_from_baseline_pct": max(drops) if drops else None,
            "rso2_asymmetry_points": (
                abs(value_left - value_right)
                if value_left is not None and value_right is not None
                else None
            ),
            "rso2_area_below_50_60min_pct_min": max(areas) if areas else None,
            "nse_ng_ml": self.nse.latest(at_s, NSE_MAX_AGE_S),
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "sides": {name: side.to_state() for name, side in self.sides.items()},
            "nse": self.nse.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        brain = cls()
        brain.sides = {name: _Side.from_state(s) for name, s in state["sides"].items()}
        brain.nse = SparseSeries.from_state(state["nse"])
        return brain
