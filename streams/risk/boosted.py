"""Gradient-boosted trees refit on a bounded window of learned rows (``--learner gbdt``).

Why: on PhysioNet 2019 set A the risk inputs of :mod:`streams.risk.features` relate to
sepsis non-linearly (a heart rate is bad high and low, a lab's meaning depends on how
long ago it was drawn), which no linear learner can express and which river's online
trees learn too slowly on 2 % positives (docs/risk.md). Boosted trees fit offline on
p000001-p010000 reach AUROC 0.80 on p010001- against 0.69 for the logistic regression;
most of the challenge's top entries were gradient boosting (Reyna 2020).

How it still learns online: every labelled row the engine learns is kept in a window of
the latest ``window_rows`` rows (float32, NaN = absent: bounded memory); the trees are
refit on that window whenever the rows learned reach the next point of a schedule:
``first_fit_rows`` (with ``min_positives`` positives), then doubling, then every
``refit_every_rows``. The trees are fixed between refits, so every prediction is made
by a model fit only on labels revealed before it (prequential). Until the first fit, a
river logistic regression (``logreg``) answers and learns. Fits run LightGBM's
deterministic mode with a fixed seed: a replay refits at the same rows into the same
trees. A refit blocks the caller (about 25 s for 400,000 rows on one core).

Explanations are the trees' exact additive contributions (TreeSHAP, in log-odds),
summed per snapshot feature.

Sources: Ke G et al. LightGBM: a highly efficient gradient boosting decision tree.
NeurIPS 2017. Lundberg SM et al. From local explanations to global understanding with
explainable AI for trees. Nat Mach Intell 2020;2:56-67 (TreeSHAP). Reyna MA et al.
Early prediction of sepsis from clinical data: the PhysioNet/Computing in Cardiology
Challenge 2019. Crit Care Med 2020;48(2):210-217.

>>> model = BoostedRiskModel(first_fit_rows=200, min_positives=20)
>>> for i in range(400):  # septic when the heart rate is high or low: no line separates
...     hr = 40.0 + (i * 37) % 120
...     model.learn_one({"heart_rate_per_min": hr}, hr < 55 or hr > 140)
>>> model.fits, model.next_fit_at  # at 200 rows, then 400; next at 800
(2, 800)
>>> [round(model.predict_proba_one({"heart_rate_per_min": hr}), 1) for hr in (45, 90, 150)]
[1.0, 0.0, 1.0]
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import lightgbm
import numpy as np

from streams.risk.features import base_feature

Features = Mapping[str, float]

TREE_PARAMS: Mapping[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.7,
    "bagging_fraction": 0.7,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
"""Chosen on set A p000001-p010000 -> p010001- (docs/risk.md): 15 leaves generalised
better than 31 or 63 (utility 0.39 against 0.34 and 0.31 at a threshold chosen on the
training patients)."""
ROUNDS = 300
_CHUNK_ROWS = 4096


class RowWindow:
    """The latest ``capacity`` (x, y) rows as float32 arrays, columns named as they come.

    >>> w = RowWindow(capacity=3, chunk_rows=2)
    >>> for i in range(5):
    ...     w.add({"a": float(i), "b" if i % 2 else "c": 1.0}, i == 4)
    >>> x, y = w.matrix()
    >>> len(w), x[:, 0].tolist(), y.tolist(), list(w.columns)
    (3, [2.0, 3.0, 4.0], [False, False, True], ['a', 'c', 'b'])
    """

    def __init__(self, capacity: int, chunk_rows: int = _CHUNK_ROWS) -> None:
        self.capacity = capacity
        self.chunk_rows = chunk_rows
        self.columns: dict[str, int] = {}
        self._chunks: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
        self._filled = 0  # rows used in the last chunk
        self._held = 0  # rows in the chunks: up to a chunk more than the capacity

    def __len__(self) -> int:
        return min(self._held, self.capacity)

    def add(self, x: Features, y: bool) -> None:
        for name in x:
            if name not in self.columns:
                self.columns[name] = len(self.columns)
        if not self._chunks or self._filled == self.chunk_rows:
            self._chunks.append(
                (
                    np.full((self.chunk_rows, len(self.columns)), np.nan, dtype=np.float32),
                    np.zeros(self.chunk_rows, dtype=bool),
                )
            )
            self._filled = 0
        xs, ys = self._chunks[-1]
        if xs.shape[1] < len(self.columns):  # a new feature: widen the open chunk only
            wider = np.full((self.chunk_rows, len(self.columns)), np.nan, dtype=np.float32)
            wider[:, : xs.shape[1]] = xs
            xs = wider
            self._chunks[-1] = (xs, ys)
        row = xs[self._filled]
        for name, value in x.items():
            row[self.columns[name]] = value
        ys[self._filled] = y
        self._filled += 1
        self._held += 1
        while self._held - self.chunk_rows >= self.capacity:  # the oldest chunk is full
            self._chunks.pop(0)
            self._held -= self.chunk_rows

    def matrix(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """All rows in the window, oldest first, as (x, y) with one column per name."""
        width = len(self.columns)
        xs, ys = [], []
        for n, (x, y) in enumerate(self._chunks):
            used = self._filled if n == len(self._chunks) - 1 else len(y)
            block = np.full((used, width), np.nan, dtype=np.float32)
            block[:, : x.shape[1]] = x[:used]
            xs.append(block)
            ys.append(y[:used])
        if not xs:
            return np.zeros((0, width), dtype=np.float32), np.zeros(0, dtype=bool)
        x_all, y_all = np.concatenate(xs), np.concatenate(ys)
        return x_all[-self.capacity :], y_all[-self.capacity :]

    def clear(self) -> None:
        """Forget the rows (not the column names)."""
        self._chunks.clear()
        self._filled = 0
        self._held = 0


class BoostedRiskModel:
    """Boosted trees refit on a window of learned rows; the :class:`RiskModel` interface."""

    name = "gbdt"

    def __init__(
        self,
        seed: int = 0,
        *,
        first_fit_rows: int = 2000,
        min_positives: int = 50,
        refit_every_rows: int = 100_000,
        window_rows: int = 400_000,
        rounds: int = ROUNDS,
        threads: int = 1,
    ) -> None:
        from streams.risk.models import make_model  # the cold-start learner

        self.seed = seed
        self.first_fit_rows = first_fit_rows
        self.min_positives = min_positives
        self.refit_every_rows = refit_every_rows
        self.rounds = rounds
        self.threads = threads
        self.window = RowWindow(window_rows)
        self.until_fit = make_model("logreg", seed)
        self.booster: lightgbm.Booster | None = None
        self.booster_columns: dict[str, int] = {}
        self.learned = 0
        self.positives = 0
        self.fits = 0
        self.fit_rows = 0  # rows the trees in use were fit on
        self.last_fit_s = 0.0
        self.next_fit_at = first_fit_rows

    # ---- the RiskModel interface --------------------------------------------------------

    def predict_proba_one(self, x: Features) -> float:
        if self.booster is None:
            return self.until_fit.predict_proba_one(x)
        p = float(self.booster.predict(self._row(x), num_threads=1)[0])
        return 0.0 if math.isnan(p) else min(1.0, max(0.0, p))

    def learn_one(self, x: Features, y: bool) -> None:
        y = bool(y)
        self.window.add(x, y)
        self.learned += 1
        self.positives += y
        if self.booster is None:
            self.until_fit.learn_one(x, y)
        if self.learned >= self.next_fit_at and self.positives >= self.min_positives:
            self.refit()

    def explain_one(self, x: Features, top: int = 5) -> list[tuple[str, float]]:
        """Top contributions (feature, log-odds), largest magnitude first."""
        if self.booster is None:
            return self.until_fit.explain_one(x, top)
        contributions = self.booster.predict(self._row(x), pred_contrib=True, num_threads=1)[0]
        by_base: dict[str, float] = {}
        for name, column in self.booster_columns.items():
            value = float(contributions[column])
            if value:
                base = base_feature(name)
                by_base[base] = by_base.get(base, 0.0) + value
        ranked = sorted(by_base.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
        return [(name, value) for name, value in ranked[:top] if value != 0.0]

    @property
    def is_linear(self) -> bool:
        return False

    # ---- refits ------------------------------------------------------------------------

    def refit(self) -> None:
        """Fit the trees on the window now; schedule the next fit."""
        x, y = self.window.matrix()
        started = time.monotonic()
        params = dict(TREE_PARAMS, seed=self.seed, num_threads=self.threads)
        params["min_data_in_leaf"] = min(int(params["min_data_in_leaf"]), max(5, len(y) // 50))
        data = lightgbm.Dataset(x, label=y, free_raw_data=True)
        self.booster = lightgbm.train(params, data, num_boost_round=self.rounds)
        self.booster_columns = dict(self.window.columns)
        self.fits += 1
        self.fit_rows = len(y)
        self.last_fit_s = time.monotonic() - started
        step = min(self.learned, self.refit_every_rows)  # doubling, then every N rows
        self.next_fit_at = self.learned + max(1, step)

    def forget_rows(self) -> None:
        """Drop the window's rows (for an export: no patient data leaves the site); the
        next refit then waits until the window again holds as many rows as the trees
        in use were fit on."""
        self.window.clear()
        self.next_fit_at = max(self.next_fit_at, self.learned + self.fit_rows)

    def _row(self, x: Features) -> np.ndarray[Any, Any]:
        row = np.full((1, len(self.booster_columns)), np.nan)
        columns = self.booster_columns
        for name, value in x.items():
            column = columns.get(name)
            if column is not None:
                row[0, column] = value
        return row
