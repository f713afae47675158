"""Bounded, event-time building blocks for the feature modules.

Every structure here is driven by observation times (epoch seconds), never the
wall clock, keeps a bounded amount of state (short raw windows, per-minute or
per-hour aggregates for long ones), and round-trips through plain JSON-able
dicts (``to_state`` / ``from_state``) so a faust table can changelog it.

- :class:`SparseSeries` sporadic values (labs, charting) with as-of look-ups;
  tolerates out-of-order inserts.
- :class:`MinuteBuckets` per-minute aggregates of a frequent signal (mean, min,
  time below a threshold, area below a threshold, trend) over a long horizon.
- :class:`StepIntegral` the integral of a step-held rate (mL/h -> mL) with gaps.
- ``streams.rolling.RollingMedian`` short raw windows (1-min medians).
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Self

HOUR_S = 3600.0
DAY_S = 86400.0


class SparseSeries:
    """Sporadic (time, value) observations, kept sorted, trimmed to a horizon.

    Out-of-order inserts (a lab whose specimen time is older than one already
    seen) go to their place; a repeat of the same time replaces the value (a
    corrected result).

    >>> s = SparseSeries(horizon_s=7 * DAY_S)
    >>> s.insert(3600.0, 1.0); s.insert(0.0, 0.9); s.insert(7200.0, 1.4)
    >>> s.as_of(5000.0)
    (3600.0, 1.0)
    >>> s.latest(7300.0, max_age_s=600.0)
    1.4
    >>> s.latest(9000.0, max_age_s=600.0) is None  # stale: unknown, never 0
    True
    >>> s.previous_before(7200.0, min_gap_s=3000.0)
    (3600.0, 1.0)
    """

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = float(horizon_s)
        self.times: list[float] = []
        self.values: list[float] = []

    def insert(self, t: float, value: float) -> None:
        i = bisect.bisect_left(self.times, t)
        if i < len(self.times) and self.times[i] == t:
            self.values[i] = value
        else:
            self.times.insert(i, t)
            self.values.insert(i, value)
        drop = self._first_kept(self.times[-1] - self.horizon_s)
        if drop > 0:
            del self.times[:drop]
            del self.values[:drop]

    def _first_kept(self, horizon: float) -> int:
        """Index of the oldest observation kept when trimming to ``horizon``."""
        return bisect.bisect_left(self.times, horizon)

    def as_of(self, at: float) -> tuple[float, float] | None:
        """The newest (time, value) observed at or before ``at``."""
        i = bisect.bisect_right(self.times, at)
        return (self.times[i - 1], self.values[i - 1]) if i else None

    def latest(self, at: float, max_age_s: float) -> float | None:
        """The value as of ``at`` if it is at most ``max_age_s`` old, else None."""
        found = self.as_of(at)
        if found is None or at - found[0] > max_age_s:
            return None
        return found[1]

    def age_s(self, at: float) -> float | None:
        found = self.as_of(at)
        return None if found is None else max(0.0, at - found[0])

    def previous_before(self, t: float, min_gap_s: float = 0.0) -> tuple[float, float] | None:
        """The newest observation at least ``min_gap_s`` before time ``t``."""
        return self.as_of(t - min_gap_s) if min_gap_s > 0 else self._strictly_before(t)

    def _strictly_before(self, t: float) -> tuple[float, float] | None:
        i = bisect.bisect_left(self.times, t)
        return (self.times[i - 1], self.values[i - 1]) if i else None

    def between(self, start: float, end: float) -> list[tuple[float, float]]:
        """Observations with ``start <= t <= end``, oldest first."""
        lo = bisect.bisect_left(self.times, start)
        hi = bisect.bisect_right(self.times, end)
        return list(zip(self.times[lo:hi], self.values[lo:hi], strict=True))

    def __len__(self) -> int:
        return len(self.times)

    def to_state(self) -> dict[str, Any]:
        return {"h": self.horizon_s, "t": self.times, "v": self.values}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        series = cls(state["h"])
        series.times = [float(t) for t in state["t"]]
        series.values = [float(v) for v in state["v"]]
        return series


class MinuteBuckets:
    """Per-minute aggregates of a frequent signal over ``horizon_min`` minutes.

    Each minute keeps: count, sum, min, seconds below ``below`` and the area
    below ``below`` (value-points x minutes). Each sample stands for the time
    until the next one, capped at ``max_hold_s`` (so a gap is not counted as
    time below a threshold). Memory is O(horizon_min), whatever the sample rate.

    >>> m = MinuteBuckets(horizon_min=60, below=65.0)
    >>> for s in range(0, 601):  # 10 min: 5 at MAP 70 then 5 at MAP 60
    ...     m.add(float(s), 70.0 if s < 300 else 60.0)
    >>> round(m.minutes_below(600.0, window_s=3600), 1)
    5.0
    >>> round(m.mean(600.0, window_s=300), 1)
    60.0
    >>> round(m.area_below(600.0, window_s=3600), 1)  # 5 points x 5 min
    25.0
    """

    def __init__(self, horizon_min: int, below: float | None = None, max_hold_s: float = 10.0):
        self.horizon_min = int(horizon_min)
        self.below = below
        self.max_hold_s = float(max_hold_s)
        # minute index -> [count, sum, min, seconds_below, area_below_point_min]
        self.buckets: dict[int, list[float]] = {}
        self.last_t: float | None = None
        self.last_v: float | None = None

    def add(self, t: float, value: float) -> None:
        """Add a sample; samples must come in non-decreasing time (caller's policy)."""
        if self.last_t is not None and self.last_v is not None and self.below is not None:
            held = min(t - self.last_t, self.max_hold_s)
            if held > 0 and self.last_v < self.below:
                bucket = self._bucket(self.last_t)
                bucket[3] += held
                bucket[4] += (self.below - self.last_v) * held / 60.0
        bucket = self._bucket(t)
        bucket[0] += 1
        bucket[1] += value
        bucket[2] = min(bucket[2], value)
        self.last_t, self.last_v = t, value
        oldest = int(t // 60) - self.horizon_min
        if len(self.buckets) > self.horizon_min + 1:
            for minute in [k for k in self.buckets if k <= oldest]:
                del self.buckets[minute]

    def _bucket(self, t: float) -> list[float]:
        minute = int(t // 60)
        bucket = self.buckets.get(minute)
        if bucket is None:
            bucket = self.buckets[minute] = [0.0, 0.0, math.inf, 0.0, 0.0]
        return bucket

    def _window(self, at: float, window_s: float) -> list[tuple[int, list[float]]]:
        first = int((at - window_s) // 60) + 1
        last = int(at // 60)
        return [(k, b) for k, b in self.buckets.items() if first <= k <= last]

    def mean(self, at: float, window_s: float) -> float | None:
        rows = self._window(at, window_s)
        count = sum(b[0] for _, b in rows)
        return sum(b[1] for _, b in rows) / count if count else None

    def minimum(self, at: float, window_s: float) -> float | None:
        rows = [b[2] for _, b in self._window(at, window_s) if b[0]]
        return min(rows) if rows else None

    def minutes_below(self, at: float, window_s: float) -> float:
        return sum(b[3] for _, b in self._window(at, window_s)) / 60.0

    def area_below(self, at: float, window_s: float) -> float:
        return sum(b[4] for _, b in self._window(at, window_s))

    def covered_minutes(self, at: float, window_s: float) -> int:
        return sum(1 for _, b in self._window(at, window_s) if b[0])

    def slope_per_h(self, at: float, window_s: float, min_minutes: int = 10) -> float | None:
        """Least-squares slope of the minute means over the window, per hour.

        None when fewer than ``min_minutes`` minutes have data (no trend from a
        handful of points).
        """
        rows = [(k, b[1] / b[0]) for k, b in self._window(at, window_s) if b[0]]
        if len(rows) < min_minutes:
            return None
        n = len(rows)
        mean_x = sum(k for k, _ in rows) / n
        mean_y = sum(v for _, v in rows) / n
        sxx = sum((k - mean_x) ** 2 for k, _ in rows)
        if sxx == 0:
            return None
        sxy = sum((k - mean_x) * (v - mean_y) for k, v in rows)
        return sxy / sxx * 60.0

    def to_state(self) -> dict[str, Any]:
        return {
            "h": self.horizon_min,
            "b": self.below,
            "m": self.max_hold_s,
            "k": {
                str(k): [x if math.isfinite(x) else None for x in v]
                for k, v in self.buckets.items()
            },
            "lt": self.last_t,
            "lv": self.last_v,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MinuteBuckets:
        buckets = cls(state["h"], state["b"], state["m"])
        buckets.buckets = {
            int(k): [math.inf if x is None else float(x) for x in v] for k, v in state["k"].items()
        }
        buckets.last_t, buckets.last_v = state["lt"], state["lv"]
        return buckets


class StepIntegral:
    """Integral over time of a step-held rate, e.g. mL/h -> mL, with hourly buckets.

    The rate set at ``t`` holds until the next update, for at most ``max_hold_s``
    (a silent machine is not assumed to keep running). ``total(at, window_s)``
    sums the integral over the trailing window from hourly buckets.

    >>> i = StepIntegral(horizon_h=24, max_hold_s=3600)
    >>> i.set(0.0, 100.0)      # 100 mL/h from t=0
    >>> i.set(1800.0, 200.0)   # 200 mL/h from 30 min
    >>> round(i.total(3600.0, window_s=24 * 3600), 1)  # 50 + 100 mL
    150.0
    """

    def __init__(self, horizon_h: int, max_hold_s: float) -> None:
        self.horizon_h = int(horizon_h)
        self.max_hold_s = float(max_hold_s)
        self.hours: dict[int, float] = {}
        self.rate_per_h: float | None = None
        self.since: float | None = None
        self.integrated_to: float | None = None

    def set(self, t: float, rate_per_h: float) -> None:
        self._advance(t)
        self.rate_per_h, self.since, self.integrated_to = rate_per_h, t, t

    def _advance(self, at: float) -> None:
        if self.rate_per_h is None or self.since is None or self.integrated_to is None:
            return
        end = min(at, self.since + self.max_hold_s)
        t = self.integrated_to
        while t < end:
            hour = int(t // HOUR_S)
            step_end = min(end, (hour + 1) * HOUR_S)
            self.hours[hour] = self.hours.get(hour, 0.0) + self.rate_per_h * (step_end - t) / HOUR_S
            t = step_end
        self.integrated_to = max(self.integrated_to, end)
        oldest = int(at // HOUR_S) - self.horizon_h
        for hour in [h for h in self.hours if h < oldest]:
            del self.hours[hour]

    def total(self, at: float, window_s: float) -> float:
        """Integral over ``(at - window_s, at]`` (hourly buckets, partial first hour).

        Read-only: the rate still being held is added for the call, not stored, so
        asking never changes the object (a restored copy stays equal to the original).
        """
        start = at - window_s
        total = 0.0
        for hour, amount in self.hours.items():
            lo, hi = hour * HOUR_S, (hour + 1) * HOUR_S
            if hi <= start or lo > at:
                continue
            if lo < start:
                amount *= (hi - start) / HOUR_S
            total += amount
        if self.rate_per_h is not None and self.since is not None:
            done = self.integrated_to if self.integrated_to is not None else self.since
            begin = max(done, start)
            end = min(at, self.since + self.max_hold_s)
            if end > begin:
                total += self.rate_per_h * (end - begin) / HOUR_S
        return total

    def to_state(self) -> dict[str, Any]:
        return {
            "h": self.horizon_h,
            "m": self.max_hold_s,
            "b": {str(k): v for k, v in self.hours.items()},
            "r": self.rate_per_h,
            "s": self.since,
            "i": self.integrated_to,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StepIntegral:
        integral = cls(state["h"], state["m"])
        integral.hours = {int(k): float(v) for k, v in state["b"].items()}
        integral.rate_per_h = state["r"]
        integral.since, integral.integrated_to = state["s"], state["i"]
        return integral


class HourlyVolumes:
    """Volumes charted over periods (urine output), spread into hourly buckets.

    A volume charted at ``t`` for the period ``(start, t]`` is spread evenly over
    the hours it covers; the hours a chart covers are *known* (even at 0 mL), the
    others are unknown, which is what KDIGO urine-output staging needs.

    >>> v = HourlyVolumes(horizon_h=48)
    >>> v.add(7200.0, 120.0, period_start=0.0)  # 120 mL over 2 h
    >>> v.hourly(7200.0, hours=3)  # oldest first; the hour before was not charted
    [None, 60.0, 60.0]
    >>> v.total(7200.0, window_s=7200.0)
    120.0
    """

    def __init__(self, horizon_h: int, default_period_s: float = HOUR_S) -> None:
        self.horizon_h = int(horizon_h)
        self.default_period_s = float(default_period_s)
        self.volume: dict[int, float] = {}
        self.covered_s: dict[int, float] = {}

    def add(self, t: float, volume: float, period_start: float | None = None) -> None:
        start = period_start if period_start is not None and period_start < t else None
        if start is None:
            start = t - self.default_period_s
        span = t - start
        cursor = start
        while cursor < t:
            hour = int(cursor // HOUR_S)
            step_end = min(t, (hour + 1) * HOUR_S)
            share = (step_end - cursor) / span
            self.volume[hour] = self.volume.get(hour, 0.0) + volume * share
            self.covered_s[hour] = min(HOUR_S, self.covered_s.get(hour, 0.0) + step_end - cursor)
            cursor = step_end
        oldest = int(t // HOUR_S) - self.horizon_h
        for hour in [h for h in self.volume if h < oldest]:
            del self.volume[hour]
            self.covered_s.pop(hour, None)

    def hourly(self, at: float, hours: int, min_coverage: float = 0.5) -> list[float | None]:
        """Volume of each of the last ``hours`` complete hours before ``at``, oldest first.

        An hour charted for less than ``min_coverage`` of its length is None.
        """
        last = int(at // HOUR_S) - 1
        out: list[float | None] = []
        for hour in range(last - hours + 1, last + 1):
            covered = self.covered_s.get(hour, 0.0)
            out.append(self.volume.get(hour, 0.0) if covered >= min_coverage * HOUR_S else None)
        return out

    def total(self, at: float, window_s: float) -> float:
        start = int((at - window_s) // HOUR_S)
        return sum(v for h, v in self.volume.items() if start <= h < at / HOUR_S)

    def to_state(self) -> dict[str, Any]:
        return {
            "h": self.horizon_h,
            "d": self.default_period_s,
            "v": {str(k): v for k, v in self.volume.items()},
            "c": {str(k): v for k, v in self.covered_s.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> HourlyVolumes:
        volumes = cls(state["h"], state["d"])
        volumes.volume = {int(k): float(v) for k, v in state["v"].items()}
        volumes.covered_s = {int(k): float(v) for k, v in state["c"].items()}
        return volumes
