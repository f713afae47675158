"""A decision threshold chosen on patients whose labels are already known.

For the sepsis outcome the benchmark's own criterion is the PhysioNet 2019 utility.
Once a patient is discharged and labelled, the utility its predictions *would have*
earned at every threshold of a fixed grid is added to a running total; the threshold
in force is the grid point with the highest total so far. Nothing about a patient
still in the unit is used, so each decision stays causal.

>>> t = UtilityThreshold(default=0.5, min_patients=1)
>>> t.add_patient([0.1, 0.1, 0.6, 0.7, 0.8, 0.9], [False] * 6)
>>> t.threshold > 0.9
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streams.risk.utility import patient_utility


def _grid() -> list[float]:
    logits = np.linspace(-7.0, 4.0, 111)
    return [float(v) for v in 1.0 / (1.0 + np.exp(-logits))]


@dataclass
class UtilityThreshold:
    default: float = 0.5
    grid: list[float] = field(default_factory=_grid)
    totals: list[float] = field(default_factory=list)
    patients: int = 0
    min_patients: int = 200
    best_index: int | None = None  # argmax of ``totals``, kept until the next patient

    def __post_init__(self) -> None:
        if not self.totals:
            self.totals = [0.0] * len(self.grid)

    def add_patient(self, probabilities: Sequence[float], labels: Sequence[bool]) -> None:
        """One discharged patient's hourly predictions and labels, in time order."""
        if not len(labels):
            return
        p = np.asarray(probabilities, dtype=float)
        y = np.asarray(labels, dtype=bool)
        for i, th in enumerate(self.grid):
            self.totals[i] += patient_utility(y, p >= th)
        self.patients += 1
        self.best_index = None

    @property
    def threshold(self) -> float:
        if self.patients < self.min_patients:
            return self.default
        if self.best_index is None:  # once per discharge, not per prediction
            self.best_index = int(np.argmax(self.totals))
        return self.grid[self.best_index]
