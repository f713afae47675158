"""Prequential monitoring: rolling AUROC, log loss and calibration, and drift on the loss.

Each (probability, label) pair is added when the label is joined, i.e. after the
prediction was published and before the model learns from it. The window is bounded;
figures are computed on demand (exact, numpy). Drift: ADWIN (Bifet & Gavalda 2007)
over the mean log loss of each *join* (one patient's rows at discharge, or the MODS
labels one snapshot settles), not over single rows: a septic patient's rows arrive
as one block of high losses, and per row ADWIN saw every such block as a change
(about a thousand "drifts" in a set A run). A detected change is counted and reported.

>>> m = PrequentialMonitor(window=100)
>>> for i in range(100):
...     _ = m.update(i % 2 == 1, 0.9 if i % 2 else 0.2)
>>> m.auroc(), round(m.log_loss(), 3), m.count
(1.0, 0.164, 100)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river import drift

from streams.risk.utility import auroc


@dataclass
class PrequentialMonitor:
    window: int = 20000
    drift_delta: float = 0.002
    pairs: deque[tuple[bool, float]] = field(default_factory=deque)
    count: int = 0
    positives: int = 0
    drifts: int = 0
    last_drift_at: float | None = None
    _adwin: Any = None
    _join_loss: float = 0.0  # summed log loss of the join in progress
    _join_n: int = 0

    def __post_init__(self) -> None:
        self.pairs = deque(self.pairs, maxlen=self.window)
        if self._adwin is None:
            self._adwin = drift.ADWIN(delta=self.drift_delta)  # type: ignore[no-untyped-call]

    def update(self, y: bool, p: float) -> None:
        """Score one prediction against its label (its join ends with :meth:`end_join`)."""
        self.pairs.append((bool(y), float(p)))
        self.count += 1
        self.positives += bool(y)
        q = min(1 - 1e-7, max(1e-7, p))
        self._join_loss += -math.log(q if y else 1 - q)
        self._join_n += 1

    def end_join(self, at: float | None = None) -> bool:
        """The labels joined together are all scored: their mean loss goes to ADWIN; True
        when it detects a change."""
        if not self._join_n:
            return False
        mean_loss = self._join_loss / self._join_n
        self._join_loss, self._join_n = 0.0, 0
        self._adwin.update(mean_loss)
        if self._adwin.drift_detected:
            self.drifts += 1
            self.last_drift_at = at
            return True
        return False

    def _arrays(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        y = np.fromiter((a for a, _ in self.pairs), dtype=bool, count=len(self.pairs))
        p = np.fromiter((b for _, b in self.pairs), dtype=float, count=len(self.pairs))
        return y, p

    def auroc(self) -> float:
        y, p = self._arrays()
        return auroc(y, p) if len(y) else float("nan")

    def log_loss(self) -> float:
        y, p = self._arrays()
        if not len(y):
            return float("nan")
        q = np.clip(p, 1e-7, 1 - 1e-7)
        return float(-np.mean(np.where(y, np.log(q), np.log(1 - q))))

    def calibration(self, bins: int = 10) -> tuple[float, list[tuple[float, float, int]]]:
        """Expected calibration error and (mean predicted, observed rate, n) per bin."""
        y, p = self._arrays()
        if not len(y):
            return float("nan"), []
        edges = np.linspace(0.0, 1.0, bins + 1)
        which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
        rows, ece = [], 0.0
        for b in range(bins):
            sel = which == b
            n = int(sel.sum())
            if n:
                mean_p, rate = float(p[sel].mean()), float(y[sel].mean())
                rows.append((mean_p, rate, n))
                ece += n / len(y) * abs(mean_p - rate)
        return ece, rows
