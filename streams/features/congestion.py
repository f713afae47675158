"""Venous congestion features: CVP level and trend, 24-h fluid balance, renal venous Doppler.

Source: /work/shared/CLINICAL.md "Renal and venous congestion": CVP has no hard
cut-off (AKI risk rises per mmHg, OR 1.22/mmHg in septic AKI, Legrand, Crit Care
2013), so the monitor shows its level and trend beside the fluid balance and the
renal venous Doppler (RVD) pattern, and flags a rising CVP while RVD is
discontinuous (Beaubien-Souligny, J Am Heart Assoc 2020).

>>> c = CongestionFeatures()
>>> for s in range(0, 3600 + 60, 5):  # CVP from 8 to 11 mmHg over one hour
...     c.observe(Quantity.CVP_MEAN, float(s), 8.0 + 3.0 * s / 3600)
>>> f = c.features(3660.0, PatientFacts())
>>> round(f["cvp_trend_60min_mmhg_h"], 2), round(f["cvp_median_5min_mmhg"], 1)
(3.0, 10.9)
>>> f["rvd_grade"], f["cvp_rising_with_discontinuous_rvd"]  # no Doppler charted
(None, None)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

from schemas.codes import Quantity
from schemas.context import FluidBalanceEntry, PatientContext, RenalVenousDoppler, UrineOutput
from streams.features.base import Features, PatientFacts
from streams.features.perfusion import WindowMedian
from streams.features.windows import (
    DAY_S,
    HOUR_S,
    HourlyVolumes,
    MinuteBuckets,
    SparseSeries,
    StepIntegral,
)

CVP_MEDIAN_WINDOW_S = 300.0
CVP_TREND_MINUTES = 60
CVP_TREND_MIN_MINUTES = 10
"""No trend from fewer than 10 minutes with data (MinuteBuckets.slope_per_h)."""
CVP_MEAN_CURRENT_S = 10.0
"""CVP samples are not kept while a CVP mean came this recently (the mean wins)."""
CVP_RISING_MMHG_H = 1.0
"""*Unverified*: "CVP rises" = slope > +1 mmHg/h over 60 min (no sourced value;
Beaubien-Souligny 2020 only says to titrate CVP down while RVD is discontinuous)."""
FLUID_WINDOW_S = DAY_S
FLUID_HORIZON_H = 26
CRRT_NET_UF_MAX_HOLD_S = 600.0
"""A CRRT net UF rate holds at most 10 min without a new value (silent machine)."""
RVD_FRESH_S = DAY_S
RVD_GRADES = {"continuous": 0, "biphasic_discontinuous": 1, "monophasic_discontinuous": 2}
"""0 normal, 1 moderate, 2 severe congestion (CLINICAL.md; Beaubien-Souligny 2020)."""

NAMES = (
    "cvp_median_5min_mmhg",
    "cvp_trend_60min_mmhg_h",
    "fluid_balance_24h_ml",
    "rvd_grade",
    "rvd_discontinuous",
    "cvp_rising_with_discontinuous_rvd",
)


class CvpSignal:
    """One CVP channel: 5-min rolling median and per-minute means for the trend."""

    def __init__(self) -> None:
        self.median = WindowMedian(CVP_MEDIAN_WINDOW_S)
        self.minutes = MinuteBuckets(horizon_min=CVP_TREND_MINUTES + 2)
        self.last_s: float | None = None

    def add(self, at_s: float, value: float) -> None:
        if self.last_s is not None and at_s < self.last_s:
            return  # late (the caller's policy drops these already)
        self.median.update(at_s, value)
        self.minutes.add(at_s, value)
        self.last_s = at_s

    def trend_key(self, minute: int) -> tuple[int, float]:
        """What the trend over the minutes before ``minute`` depends on besides them.

        Complete minutes change only while the newest sample is still in one of them.
        """
        if self.last_s is None:
            return (minute, -1.0)
        last_minute = int(self.last_s // 60)
        if last_minute >= minute:
            return (minute, -1.0)
        return (last_minute, self.minutes.buckets[last_minute][0])

    def trend_per_h(self, minute: int) -> float | None:
        """Least-squares slope of the 60 complete minute means before ``minute``, per hour."""
        return self.minutes.slope_per_h(minute * 60.0 - 0.5, CVP_TREND_MINUTES * 60.0)

    def to_state(self) -> dict[str, Any]:
        return {
            "median": self.median.to_state(),
            "minutes": self.minutes.to_state(),
            "last_s": self.last_s,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CvpSignal:
        signal = cls()
        signal.median = WindowMedian.from_state(state["median"])
        signal.minutes = MinuteBuckets.from_state(state["minutes"])
        signal.last_s = None if state["last_s"] is None else float(state["last_s"])
        return signal


def window_sum(hours: dict[int, float], start: float, at_s: float) -> float:
    """Sum of hourly amounts over ``(start, at]``, the first hour prorated.

    The hour holding ``at`` counts whole (its amounts are charted by ``at``).

    >>> window_sum({0: 60.0, 1: 100.0, 2: 10.0}, start=1800.0, at_s=4000.0)
    130.0
    """
    last = int(at_s // HOUR_S)
    total = 0.0
    for hour, amount in hours.items():
        lo = hour * HOUR_S
        if hour > last or lo + HOUR_S <= start:
            continue
        total += amount * (lo + HOUR_S - start) / HOUR_S if lo < start else amount
    return total


class CongestionFeatures:
    """Venous congestion features of one patient (catalogue organ ``congestion``).

    - CVP: the CVP mean channel (``CVP_MEAN``) while it has a sample in the last
      5 min, else plain ``CVP``. ``cvp_median_5min_mmhg``: median over
      ``(at - 300 s, at]``. ``cvp_trend_60min_mmhg_h``: least-squares slope of the
      per-minute means of the 60 complete minutes before ``at``'s minute, None
      with fewer than 10 minutes of data or when the median is unknown (no CVP
      in 5 min: an old trend is stale).
    - ``fluid_balance_24h_ml`` = charted intake - charted other output - urine
      - CRRT net ultrafiltration (net UF rate step-held at most 10 min), over
      ``(start of at's minute - 24 h, at]``: charted entries to the minute (the
      1440 minutes up to ``at``'s), urine and net UF from hourly amounts (the
      oldest hour prorated, the hour of ``at`` whole). Known only when at least
      one ``FluidBalanceEntry`` (in or out) was charted in the last 24 h: urine
      and CRRT alone do not make a balance (intake would be missing), *decision*.
    - RVD: the last charted pattern within 24 h, graded 0/1/2.
    - ``cvp_rising_with_discontinuous_rvd``: 1 when RVD is discontinuous (grade
      >= 1) and the CVP trend > +1 mmHg/h (*unverified* cut-off). Three-valued:
      0 as soon as either part is known false (RVD continuous, or CVP not rising),
      None only while an unknown part could still make it 1 (the rule scores.py
      follows for totals).
    """

    quantities: ClassVar[frozenset[Quantity]] = frozenset(
        {
            Quantity.CRRT_NET_UF_RATE,
            Quantity.CVP,
            Quantity.CVP_MEAN,
        }
    )
    """The measurements this group reads (the caller routes only these to it)."""

    def __init__(self) -> None:
        self.cvp_mean = CvpSignal()
        self.cvp = CvpSignal()
        # charted intake and other output, mL per minute (point entries: exact to the minute)
        self.fluid_in: dict[int, float] = {}
        self.fluid_out: dict[int, float] = {}
        self.fluid_last_entry_s: float | None = None
        self.urine = HourlyVolumes(horizon_h=FLUID_HORIZON_H)
        self.crrt_net_uf = StepIntegral(
            horizon_h=FLUID_HORIZON_H, max_hold_s=CRRT_NET_UF_MAX_HOLD_S
        )
        self.rvd = SparseSeries(horizon_s=RVD_FRESH_S)
        self._fluid_version = 0
        self._trend_key: tuple[int, str, int, float] | None = None
        self._trend: float | None = None
        self._balance_key: tuple[int, int] | None = None
        self._balance_charted = 0.0

    # ---- inputs --------------------------------------------------------------------

    def observe(self, quantity: Quantity, at_s: float, value: float) -> None:
        if quantity is Quantity.CVP_MEAN:
            self.cvp_mean.add(at_s, value)
        elif quantity is Quantity.CVP:
            mean_at = self.cvp_mean.last_s
            if mean_at is None or at_s - mean_at > CVP_MEAN_CURRENT_S:
                self.cvp.add(at_s, value)
        elif quantity is Quantity.CRRT_NET_UF_RATE:
            since = self.crrt_net_uf.since
            if since is None or at_s >= since:
                self.crrt_net_uf.set(at_s, value)
                self._fluid_version += 1

    def observe_context(self, event: PatientContext, at_s: float) -> None:
        if isinstance(event, FluidBalanceEntry):
            minutes = self.fluid_in if event.direction == "in" else self.fluid_out
            minute = int(at_s // 60)
            minutes[minute] = minutes.get(minute, 0.0) + event.volume_ml
            last = self.fluid_last_entry_s
            self.fluid_last_entry_s = at_s if last is None else max(last, at_s)
            oldest = int(self.fluid_last_entry_s // 60) - FLUID_HORIZON_H * 60
            for table in (self.fluid_in, self.fluid_out):
                for old in [m for m in table if m < oldest]:
                    del table[old]
            self._fluid_version += 1
        elif isinstance(event, UrineOutput):
            start = None if event.period_start is None else event.period_start.timestamp()
            self.urine.add(at_s, event.volume_ml, period_start=start)
            self._fluid_version += 1
        elif isinstance(event, RenalVenousDoppler):
            self.rvd.insert(at_s, float(RVD_GRADES[event.pattern]))

    # ---- features ------------------------------------------------------------------

    def _cvp(self, at_s: float) -> tuple[float | None, float | None]:
        """(5-min median, 60-min trend) of the preferred CVP channel."""
        name, signal = "mean", self.cvp_mean
        median = signal.median.median_at(at_s)
        if median is None:
            name, signal = "cvp", self.cvp
            median = signal.median.median_at(at_s)
            if median is None:
                return None, None
        minute = int(at_s // 60)
        key = (minute, name, *signal.trend_key(minute))
        if key != self._trend_key:
            self._trend = signal.trend_per_h(minute)
            self._trend_key = key
        return median, self._trend

    def _fluid_balance(self, at_s: float) -> float | None:
        entry_at = self.fluid_last_entry_s
        if entry_at is None or at_s - entry_at >= FLUID_WINDOW_S:
            return None
        minute = int(at_s // 60)
        start = minute * 60.0 - FLUID_WINDOW_S
        key = (minute, self._fluid_version)
        if key != self._balance_key:
            first = minute - int(FLUID_WINDOW_S // 60)
            self._balance_charted = (
                math.fsum(v for m, v in self.fluid_in.items() if first < m <= minute)
                - math.fsum(v for m, v in self.fluid_out.items() if first < m <= minute)
                - window_sum(self.urine.volume, start, at_s)
                - window_sum(self.crrt_net_uf.hours, start, at_s)
            )
            self._balance_key = key
        return self._balance_charted - self._pending_net_uf(start, at_s)

    def _pending_net_uf(self, start: float, at_s: float) -> float:
        """Net UF since the last rate (not yet in the hourly integral), within the window."""
        uf = self.crrt_net_uf
        if uf.rate_per_h is None or uf.since is None:
            return 0.0
        lo, hi = max(uf.since, start), min(at_s, uf.since + uf.max_hold_s)
        return uf.rate_per_h * (hi - lo) / HOUR_S if hi > lo else 0.0

    def features(self, at_s: float, facts: PatientFacts) -> Features:
        median, trend = self._cvp(at_s)
        grade = self.rvd.latest(at_s, RVD_FRESH_S)
        discontinuous = None if grade is None else int(grade >= 1)
        rising = None if trend is None else trend > CVP_RISING_MMHG_H
        both: int | None
        if discontinuous == 0 or rising is False:
            both = 0
        elif discontinuous is None or rising is None:
            both = None
        else:
            both = 1
        return {
            "cvp_median_5min_mmhg": median,
            "cvp_trend_60min_mmhg_h": trend,
            "fluid_balance_24h_ml": self._fluid_balance(at_s),
            "rvd_grade": None if grade is None else int(grade),
            "rvd_discontinuous": discontinuous,
            "cvp_rising_with_discontinuous_rvd": both,
        }

    # ---- state ---------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "cvp_mean": self.cvp_mean.to_state(),
            "cvp": self.cvp.to_state(),
            "fluid_in": {str(h): v for h, v in self.fluid_in.items()},
            "fluid_out": {str(h): v for h, v in self.fluid_out.items()},
            "fluid_last_entry_s": self.fluid_last_entry_s,
            "urine": self.urine.to_state(),
            "crrt_net_uf": self.crrt_net_uf.to_state(),
            "rvd": self.rvd.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        group = cls()
        group.cvp_mean = CvpSignal.from_state(state["cvp_mean"])
        group.cvp = CvpSignal.from_state(state["cvp"])
        group.fluid_in = {int(h): float(v) for h, v in state["fluid_in"].items()}
        group.fluid_out = {int(h): float(v) for h, v in state["fluid_out"].items()}
        last = state["fluid_last_entry_s"]
        group.fluid_last_entry_s = None if last is None else float(last)
        group.urine = HourlyVolumes.from_state(state["urine"])
        group.crrt_net_uf = StepIntegral.from_state(state["crrt_net_uf"])
        group.rvd = SparseSeries.from_state(state["rvd"])
        return group
