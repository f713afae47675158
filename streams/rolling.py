"""Rolling statistics in event time.

Small objects with river's ``update`` / ``get`` shape, driven by observation
times (epoch seconds) and never by the wall clock, so a replay at any speed gives
the same numbers. Their state round-trips through plain dicts (``to_state`` /
``from_state``) so faust tables can changelog it as JSON.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any


class RollingMedian:
    """Median of the values observed in the trailing window ``(t - width_s, t]``.

    Samples must arrive in non-decreasing event time (the caller enforces the
    late-sample policy). Insertion is O(window) with a sorted list, which for
    1 Hz data and a 60 s window is a few dozen element moves.

    >>> m = RollingMedian(width_s=60)
    >>> for t, v in [(0, 80.0), (1, 60.0), (2, 62.0)]:
    ...     m.update(t, v)
    >>> m.get()
    62.0
    >>> m.update(61, 90.0)  # t=0 and t=1 have left the window (61-60, 61]
    >>> m.get()
    76.0
    >>> m.get_at(200) is None  # nothing observed in (140, 200]
    True
    """

    def __init__(self, width_s: float) -> None:
        if width_s <= 0:
            raise ValueError("width_s must be positive")
        self.width_s = float(width_s)
        self._times: deque[float] = deque()
        self._values: deque[float] = deque()
        self._sorted: list[float] = []

    def update(self, t: float, value: float) -> None:
        """Add ``value`` observed at ``t`` and drop what has left the window."""
        if self._times and t < self._times[-1]:
            raise ValueError(f"out-of-order sample: t={t} < last t={self._times[-1]}")
        self._times.append(t)
        self._values.append(value)
        bisect.insort(self._sorted, value)
        self._expire(t)

    def _expire(self, now: float) -> None:
        horizon = now - self.width_s
        while self._times and self._times[0] <= horizon:
            self._times.popleft()
            old = self._values.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def get(self) -> float | None:
        """Median of the window as of the latest sample, None when empty."""
        n = len(self._sorted)
        if n == 0:
            return None
        mid = n // 2
        if n % 2:
            return self._sorted[mid]
        return (self._sorted[mid - 1] + self._sorted[mid]) / 2.0

    def get_at(self, now: float) -> float | None:
        """Median as of event time ``now`` (expires samples older than the window)."""
        self._expire(now)
        return self.get()

    def __len__(self) -> int:
        return len(self._sorted)

    def to_state(self) -> dict[str, Any]:
        return {"width_s": self.width_s, "t": list(self._times), "v": list(self._values)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RollingMedian:
        rolling = cls(state["width_s"])
        for t, v in zip(state["t"], state["v"], strict=True):
            rolling._times.append(float(t))
            rolling._values.append(float(v))
        rolling._sorted = sorted(rolling._values)
        return rolling
