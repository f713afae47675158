"""Perfusion (forward flow) features: MAP, heart rate, shock index, lactate, capillary refill.

Source of every threshold: /work/shared/CLINICAL.md "Perfusion (forward flow)".

Which MAP: ``map_median_1min_mmhg`` is the 1-min median of the continuous invasive
arterial mean (ABP), exactly as ``streams.monitor`` computes it for the MAP rule:
an ABP mean whose time is not after the last one used is dropped, and the median
at ``at`` is taken over ``(at - 60 s, at]`` (None when no ABP mean lies in it).
Cuff (NBP) means come every 5-15 min: they feed ``map_mmhg`` only when no ABP
mean is under 60 s old, and their own features ``nbp_map_mmhg`` and
``nbp_map_low_count`` (the NBP-only patient's evidence).

>>> p = PerfusionFeatures()
>>> for s in range(120):
...     p.observe(Quantity.ABP_MEAN, float(s), 60.0)
...     p.observe(Quantity.HEART_RATE, float(s), 110.0)
...     p.observe(Quantity.ABP_SYS, float(s), 88.0)
>>> f = p.features(119.0, PatientFacts())
>>> f["map_median_1min_mmhg"], f["map_min_60min_mmhg"], f["shock_index"]
(60.0, 60.0, 1.25)
>>> round(f["map_time_below_65_60min_min"], 2)  # 119 s held below 65
1.98
"""

from __future__ import annotations

import bisect
import math
from typing import Any, ClassVar, Self

from schemas.codes import Quantity
from schemas.context import CapillaryRefill, PatientContext
from streams.features.base import Features, PatientFacts
from streams.features.windows import HOUR_S, MinuteBuckets, SparseSeries
from streams.rolling import RollingMedian

MAP_MEDIAN_WINDOW_S = 60.0
"""1-min median of MAP (CLINICAL.md Perfusion: "the 1-min median stays below 65")."""
MAP_TARGET_MMHG = 65.0
"""Sepsis-3 MAP target (CLINICAL.md Perfusion)."""
MAP_HISTORY_S = 3600.0
ABP_FRESH_S = 60.0
"""``map_mmhg`` uses the invasive mean while one is at most this old."""
NBP_FRESH_S = 30 * 60.0
"""A cuff reading is current for 30 min (cuffs cycle every 5-15 min)."""
VITALS_MEDIAN_WINDOW_S = 60.0
LACTATE_FRESH_S = 24 * HOUR_S
LACTATE_HIGH_MMOL_L = 2.0
"""Lactate > 2 mmol/L: hypoperfusion (CLINICAL.md Perfusion; Sepsis-3)."""
LACTATE_CLEARANCE_TARGET_PCT = 10.0
"""Clearance >= 10 % is the resuscitation target (Jones, JAMA 2010;303:739)."""
LACTATE_RECHECK_S = 2 * HOUR_S
"""Clearance is judged 2 h after the initial lactate (Jones 2010; CLINICAL.md)."""
LACTATE_PAIR_MIN_S = 1 * HOUR_S
LACTATE_PAIR_MAX_S = 6 * HOUR_S
"""The initial value of a clearance pair lies 1-6 h before the later value."""
CAPILLARY_REFILL_FRESH_S = HOUR_S
"""ANDROMEDA-SHOCK checked capillary refill every 30 min; older than 1 h is stale."""

NAMES = (
    "map_mmhg",
    "map_median_1min_mmhg",
    "map_min_60min_mmhg",
    "map_time_below_65_60min_min",
    "nbp_map_mmhg",
    "nbp_map_low_count",
    "heart_rate_per_min",
    "sbp_mmhg",
    "shock_index",
    "lactate_mmol_l",
    "lactate_clearance_pct",
    "lactate_clearance_due",
    "capillary_refill_s",
)
_EPS = 1e-9  # absorbs float error at the 10 % bound (100 x (4.0 - 3.6) / 4.0 < 10)


class WindowMedian(RollingMedian):
    """A :class:`RollingMedian` whose look-ups at a later time do not expire samples.

    ``RollingMedian.get_at`` drops samples that left the window at the asked
    time. The patient's clock can run ahead of one source (another topic moved
    it), and that source's next sample, older than the clock, must still see the
    samples of its own window: so :meth:`median_at` leaves the window intact.

    >>> m = WindowMedian(width_s=60)
    >>> for t, v in [(0, 80.0), (30, 60.0), (50, 70.0)]:
    ...     m.update(t, v)
    >>> m.median_at(75)  # t=0 is out of (15, 75]
    65.0
    >>> m.update(55, 90.0)  # a sample older than the look-up: t=0 still counts
    >>> m.get()
    75.0
    """

    def median_at(self, now: float) -> float | None:
        """Median of the samples in ``(now - width_s, now]``, without changing the window."""
        horizon = now - self.width_s
        times = self._times
        if not times or times[-1] <= horizon:
            return None
        if times[0] > horizon:
            return self.get()
        window = self._sorted.copy()
        for t, value in zip(times, self._values, strict=True):
            if t > horizon:
                break
            del window[bisect.bisect_left(window, value)]
        n = len(window)
        mid = n // 2
        return window[mid] if n % 2 else (window[mid - 1] + window[mid]) / 2.0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WindowMedian:
        rolling = super().from_state(state)
        assert isinstance(rolling, WindowMedian)
        return rolling


def lactate_clearance(
    lactate: SparseSeries, at_s: float
) -> tuple[float | None, float | None, int | None]:
    """(latest lactate, clearance %, clearance due) as of ``at_s``.

    Clearance (Jones JAMA 2010; CLINICAL.md Perfusion) = 100 x (initial - later)
    / initial, pairing the latest value (at most 24 h old) with the newest value
    1-6 h before it. ``due`` (the 2-h clearance target is not met):

    - None when no lactate in the last 24 h;
    - 0 when the latest lactate is <= 2 mmol/L;
    - paired with an initial > 2: 0 when cleared >= 10 %, else 1 once 2 h have
      passed since that initial (0 before: not yet due);
    - otherwise the latest (> 2) is itself an initial awaiting re-measurement:
      1 once 2 h have passed without one, 0 before. *Decision*: a missing
      re-measurement counts as "not shown to clear" (CLINICAL.md: re-measured
      about every 2 h). A value that already cleared >= 10 % is not asked to
      clear again until the next result arrives.

    >>> s = SparseSeries(horizon_s=30 * HOUR_S)
    >>> s.insert(0.0, 4.0); s.insert(2 * HOUR_S, 3.6)   # 10 % clearance at 2 h
    >>> lactate, pct, due = lactate_clearance(s, 2 * HOUR_S)
    >>> lactate, round(pct, 1), due
    (3.6, 10.0, 0)
    >>> s.insert(4 * HOUR_S, 3.5)                       # 2.8 % since the 2-h value
    >>> lactate, pct, due = lactate_clearance(s, 4 * HOUR_S)
    >>> round(pct, 1), due
    (2.8, 1)
    """
    latest = lactate.as_of(at_s)
    if latest is None or at_s - latest[0] > LACTATE_FRESH_S:
        return None, None, None
    t1, v1 = latest
    lo = bisect.bisect_left(lactate.times, t1 - LACTATE_PAIR_MAX_S)
    hi = bisect.bisect_right(lactate.times, t1 - LACTATE_PAIR_MIN_S)
    pct: float | None = None
    initial: tuple[float, float] | None = None
    if hi > lo:
        initial = (lactate.times[hi - 1], lactate.values[hi - 1])
        if initial[1] > 0:
            pct = 100.0 * (initial[1] - v1) / initial[1]
    if v1 <= LACTATE_HIGH_MMOL_L:
        due = 0
    elif initial is not None and initial[1] > LACTATE_HIGH_MMOL_L and pct is not None:
        cleared = pct >= LACTATE_CLEARANCE_TARGET_PCT - _EPS
        due = 0 if cleared or at_s - initial[0] < LACTATE_RECHECK_S else 1
    else:
        due = 1 if at_s - t1 >= LACTATE_RECHECK_S else 0
    return v1, pct, due


def _window_minutes(buckets: MinuteBuckets, first: int, last: int) -> list[list[float]]:
    return [b for k, b in buckets.buckets.items() if first <= k <= last and b[0]]


class PerfusionFeatures:
    """Perfusion features of one patient (catalogue organ ``perfusion``).

    - MAP: ``map_median_1min_mmhg`` as the MAP rule uses it (see module doc);
      ``map_min_60min_mmhg`` and ``map_time_below_65_60min_min`` over the minutes
      ``at``'s minute and the 59 before it, computed on that 1-min median (each
      median value holds until the next ABP sample, at most 60 s), None without
      any ABP mean in those minutes. ``map_mmhg``: latest ABP mean <= 60 s old,
      else latest cuff mean <= 30 min old.
    - ``nbp_map_low_count``: consecutive most recent cuff means < 65; a gap of
      more than 30 min between two cuff readings starts a new run (*decision*);
      None without a cuff reading in 30 min.
    - Heart rate: 1-min median ECG heart rate, else 1-min median pulse rate.
      Systolic: 1-min median arterial systolic, else last cuff systolic (30 min).
      Shock index HR/SBP (CLINICAL.md: >= 1.0, unverified).
    - Lactate and clearance: :func:`lactate_clearance`. Capillary refill: last
      charted within 1 h (ANDROMEDA-SHOCK, Hernandez JAMA 2019).
    """

    quantities: ClassVar[frozenset[Quantity]] = frozenset(
        {
            Quantity.ABP_MEAN,
            Quantity.ABP_SYS,
            Quantity.HEART_RATE,
            Quantity.LACTATE,
            Quantity.NBP_MEAN,
            Quantity.NBP_SYS,
            Quantity.PULSE_RATE,
        }
    )
    """The measurements this group reads (the caller routes only these to it)."""

    def __init__(self) -> None:
        self.abp_mean = WindowMedian(MAP_MEDIAN_WINDOW_S)
        self.abp_mean_last: tuple[float, float] | None = None
        # the 1-min median after each ABP sample, per minute, below 65 mmHg
        self.map_minutes = MinuteBuckets(
            horizon_min=61, below=MAP_TARGET_MMHG, max_hold_s=MAP_MEDIAN_WINDOW_S
        )
        self.abp_sys = WindowMedian(VITALS_MEDIAN_WINDOW_S)
        self.heart_rate = WindowMedian(VITALS_MEDIAN_WINDOW_S)
        self.pulse_rate = WindowMedian(VITALS_MEDIAN_WINDOW_S)
        self.nbp_mean_last: tuple[float, float] | None = None
        self.nbp_low_run = 0
        self.nbp_sys_last: tuple[float, float] | None = None
        self.lactate = SparseSeries(horizon_s=LACTATE_FRESH_S + LACTATE_PAIR_MAX_S)
        self.capillary_refill = SparseSeries(horizon_s=CAPILLARY_REFILL_FRESH_S)
        self._minutes_key: tuple[int, int, float] | None = None
        self._minutes_done: tuple[float, float, int] = (math.inf, 0.0, 0)

    # ---- inputs --------------------------------------------------------------------

    def observe(self, quantity: Quantity, at_s: float, value: float) -> None:
        if quantity is Quantity.ABP_MEAN:
            if self.abp_mean_last is not None and at_s <= self.abp_mean_last[0]:
                return  # late: same policy as streams.monitor
            self.abp_mean_last = (at_s, value)
            self.abp_mean.update(at_s, value)
            median = self.abp_mean.get()
            assert median is not None
            self.map_minutes.add(at_s, median)
        elif quantity is Quantity.NBP_MEAN:
            last = self.nbp_mean_last
            if last is not None and at_s <= last[0]:
                return
            if value >= MAP_TARGET_MMHG:
                self.nbp_low_run = 0
            elif last is None or at_s - last[0] > NBP_FRESH_S:
                self.nbp_low_run = 1
            else:
                self.nbp_low_run += 1
            self.nbp_mean_last = (at_s, value)
        elif quantity is Quantity.NBP_SYS:
            if self.nbp_sys_last is None or at_s > self.nbp_sys_last[0]:
                self.nbp_sys_last = (at_s, value)
        elif quantity is Quantity.ABP_SYS:
            _update(self.abp_sys, at_s, value)
        elif quantity is Quantity.HEART_RATE:
            _update(self.heart_rate, at_s, value)
        elif quantity is Quantity.PULSE_RATE:
            _update(self.pulse_rate, at_s, value)
        elif quantity is Quantity.LACTATE:
            self.lactate.insert(at_s, value)

    def observe_context(self, event: PatientContext, at_s: float) -> None:
        if isinstance(event, CapillaryRefill):
            self.capillary_refill.insert(at_s, event.seconds)

    # ---- features ------------------------------------------------------------------

    def _map_history(self, at_s: float) -> tuple[float | None, float | None]:
        """(lowest 1-min median, minutes below 65) over ``at``'s minute and the 59 before.

        Same numbers as ``MinuteBuckets.minimum`` / ``minutes_below`` with a
        3600-s window; the 59 complete minutes are cached until they can change.
        """
        buckets = self.map_minutes
        minute = int(at_s // 60)
        last_minute = minute if buckets.last_t is None else int(buckets.last_t // 60)
        if last_minute < minute:  # the next sample will still credit that minute
            key = (minute, last_minute, buckets.buckets[last_minute][0])
        else:
            key = (minute, minute, -1.0)
        if key != self._minutes_key:
            done = _window_minutes(buckets, minute - 59, minute - 1)
            self._minutes_done = (
                min((b[2] for b in done), default=math.inf),
                sum(b[3] for b in done),
                len(done),
            )
            self._minutes_key = key
        lowest, below_s, covered = self._minutes_done
        current = buckets.buckets.get(minute)
        if current is not None and current[0]:
            lowest, below_s, covered = min(lowest, current[2]), below_s + current[3], covered + 1
        if not covered:
            return None, None
        return lowest, below_s / 60.0

    def features(self, at_s: float, facts: PatientFacts) -> Features:
        map_median = self.abp_mean.median_at(at_s)
        lowest, below_min = self._map_history(at_s)
        nbp_mean = _fresh(self.nbp_mean_last, at_s, NBP_FRESH_S)
        abp_mean = _fresh(self.abp_mean_last, at_s, ABP_FRESH_S)
        heart_rate = self.heart_rate.median_at(at_s)
        if heart_rate is None:
            heart_rate = self.pulse_rate.median_at(at_s)
        sbp = self.abp_sys.median_at(at_s)
        if sbp is None:
            sbp = _fresh(self.nbp_sys_last, at_s, NBP_FRESH_S)
        shock_index = heart_rate / sbp if heart_rate is not None and sbp else None
        lactate, clearance_pct, clearance_due = lactate_clearance(self.lactate, at_s)
        return {
            "map_mmhg": abp_mean if abp_mean is not None else nbp_mean,
            "map_median_1min_mmhg": map_median,
            "map_min_60min_mmhg": lowest,
            "map_time_below_65_60min_min": below_min,
            "nbp_map_mmhg": nbp_mean,
            "nbp_map_low_count": None if nbp_mean is None else self.nbp_low_run,
            "heart_rate_per_min": heart_rate,
            "sbp_mmhg": sbp,
            "shock_index": shock_index,
            "lactate_mmol_l": lactate,
            "lactate_clearance_pct": clearance_pct,
            "lactate_clearance_due": clearance_due,
            "capillary_refill_s": self.capillary_refill.latest(at_s, CAPILLARY_REFILL_FRESH_S),
        }

    # ---- state ---------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "abp_mean": self.abp_mean.to_state(),
            "abp_mean_last": self.abp_mean_last,
            "map_minutes": self.map_minutes.to_state(),
            "abp_sys": self.abp_sys.to_state(),
            "heart_rate": self.heart_rate.to_state(),
            "pulse_rate": self.pulse_rate.to_state(),
            "nbp_mean_last": self.nbp_mean_last,
            "nbp_low_run": self.nbp_low_run,
            "nbp_sys_last": self.nbp_sys_last,
            "lactate": self.lactate.to_state(),
            "capillary_refill": self.capillary_refill.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        group = cls()
        group.abp_mean = WindowMedian.from_state(state["abp_mean"])
        group.abp_mean_last = _pair(state["abp_mean_last"])
        group.map_minutes = MinuteBuckets.from_state(state["map_minutes"])
        group.abp_sys = WindowMedian.from_state(state["abp_sys"])
        group.heart_rate = WindowMedian.from_state(state["heart_rate"])
        group.pulse_rate = WindowMedian.from_state(state["pulse_rate"])
        group.nbp_mean_last = _pair(state["nbp_mean_last"])
        group.nbp_low_run = int(state["nbp_low_run"])
        group.nbp_sys_last = _pair(state["nbp_sys_last"])
        group.lactate = SparseSeries.from_state(state["lactate"])
        group.capillary_refill = SparseSeries.from_state(state["capillary_refill"])
        return group


def _update(rolling: WindowMedian, at_s: float, value: float) -> None:
    """Feed a rolling median; a sample older than its last is late and dropped."""
    try:
        rolling.update(at_s, value)
    except ValueError:
        return


def _fresh(last: tuple[float, float] | None, at_s: float, max_age_s: float) -> float | None:
    if last is None or at_s - last[0] > max_age_s:
        return None
    return last[1]


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))
