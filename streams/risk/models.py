"""Risk learners behind one small interface: river pipelines, and ``gbdt``.

``gbdt`` (:mod:`streams.risk.boosted`, the default) is boosted trees refit on a window of
learned rows, with the river ``logreg`` below answering until its first fit.

Every model answers ``predict_proba_one(x) -> float`` (probability of the outcome),
learns with ``learn_one(x, y)`` and explains with ``explain_one(x)`` (the top feature
contributions, in log-odds for the linear model, by occlusion of each input feature's
group otherwise). Inputs are plain ``dict[str, float]``; features may appear or vanish.

>>> model = make_model("logreg", seed=1)
>>> for i in range(200):
...     model.learn_one({"lactate_mmol_l": 1.0 + (i % 2) * 3}, bool(i % 2))
>>> model.predict_proba_one({"lactate_mmol_l": 4.0}) > 0.5 > model.predict_proba_one(
...     {"lactate_mmol_l": 1.0})
True
>>> model.explain_one({"lactate_mmol_l": 4.0}, top=1)[0][0]
'lactate_mmol_l'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from river import compose, ensemble, forest, imblearn, linear_model, optim, preprocessing, tree

from streams.risk.features import base_feature

Features = Mapping[str, float]


class RiskModel(Protocol):
    """What the risk engine needs of a learner."""

    name: str
    learned: int  # labels learned
    positives: int  # of which positive

    def predict_proba_one(self, x: Features) -> float: ...

    def learn_one(self, x: Features, y: bool) -> None: ...

    def explain_one(self, x: Features, top: int = 5) -> list[tuple[str, float]]: ...

    @property
    def is_linear(self) -> bool:
        """True when explanations are exact and cheap (explain every prediction)."""
        ...


def _logreg(seed: int) -> Any:
    del seed  # deterministic: plain SGD, zero init
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.005), l2=1e-4, intercept_lr=0.005
    )


def _hoeffding(seed: int) -> Any:
    del seed
    return tree.HoeffdingTreeClassifier(grace_period=200, leaf_prediction="nb", delta=1e-5)


def _hoeffding_oversampled(seed: int) -> Any:
    """A Hoeffding tree that sees the rare positives (~2 % of PhysioNet rows) as 30 % of
    its stream (Poisson oversampling): without it the tree never splits."""
    return imblearn.RandomOverSampler(
        tree.HoeffdingTreeClassifier(grace_period=200, leaf_prediction="nba", delta=1e-5),
        desired_dist={False: 0.7, True: 0.3},
        seed=seed,
    )


def _hat(seed: int) -> Any:
    return tree.HoeffdingAdaptiveTreeClassifier(
        grace_period=200, leaf_prediction="nb", delta=1e-5, seed=seed
    )


def _arf(seed: int) -> Any:
    return forest.ARFClassifier(n_models=10, seed=seed, grace_period=100, leaf_prediction="nb")


def _amf(seed: int) -> Any:
    return forest.AMFClassifier(n_estimators=10, use_aggregation=True, dirichlet=0.5, seed=seed)


def _bagging_lr(seed: int) -> Any:
    return ensemble.BaggingClassifier(_logreg(seed), n_models=5, seed=seed)


def _bagging_ht(seed: int) -> Any:
    return ensemble.BaggingClassifier(_hoeffding(seed), n_models=5, seed=seed)


LEARNERS: Mapping[str, Callable[[int], Any]] = {
    "logreg": _logreg,
    "hoeffding": _hoeffding,
    "hoeffding_oversampled": _hoeffding_oversampled,
    "hat": _hat,
    "arf": _arf,
    "amf": _amf,
    "bagging_lr": _bagging_lr,
    "bagging_ht": _bagging_ht,
}
"""River pipelines tried on the PhysioNet benchmark (see docs/risk.md for the figures)."""

BOOSTED = "gbdt"
"""Boosted trees refit on a window of learned rows (:mod:`streams.risk.boosted`)."""

LEARNER_NAMES: tuple[str, ...] = (*sorted(LEARNERS), BOOSTED)


class RiverRiskModel:
    """A river binary classifier wrapped to the :class:`RiskModel` interface."""

    def __init__(self, name: str, seed: int = 0) -> None:
        if name not in LEARNERS:
            raise ValueError(f"unknown learner {name!r}; known: {list(LEARNER_NAMES)}")
        self.name = name
        self.seed = seed
        self.pipeline: Any = LEARNERS[name](seed)
        self.learned = 0
        self.positives = 0

    def predict_proba_one(self, x: Features) -> float:
        proba = self.pipeline.predict_proba_one(dict(x))
        p = float(proba.get(True, 0.0)) if proba else 0.0
        if math.isnan(p):
            return 0.0
        return min(1.0, max(0.0, p))

    def learn_one(self, x: Features, y: bool) -> None:
        self.pipeline.learn_one(dict(x), bool(y))
        self.learned += 1
        self.positives += bool(y)

    def explain_one(self, x: Features, top: int = 5) -> list[tuple[str, float]]:
        """Top contributions: (feature, log-odds contribution), largest magnitude first."""
        linear = self._linear_parts()
        if linear is not None:
            scaler, regression = linear
            scaled = scaler.transform_one(dict(x))
            weights: Mapping[str, float] = regression.weights
            by_base: dict[str, float] = {}
            for name, value in scaled.items():
                base = base_feature(name)
                by_base[base] = by_base.get(base, 0.0) + float(weights.get(name, 0.0)) * value
        else:
            by_base = self._occlusion(x)
        ranked = sorted(by_base.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
        return [(name, value) for name, value in ranked[:top] if value != 0.0]

    @property
    def is_linear(self) -> bool:
        return self._linear_parts() is not None

    def _linear_parts(self) -> tuple[Any, Any] | None:
        pipeline = self.pipeline
        if isinstance(pipeline, compose.Pipeline):
            steps = list(pipeline.steps.values())
            if len(steps) == 2 and isinstance(steps[1], linear_model.LogisticRegression):
                return steps[0], steps[1]
        return None

    def _occlusion(self, x: Features) -> dict[str, float]:
        def logit(p: float) -> float:
            p = min(1 - 1e-6, max(1e-6, p))
            return math.log(p / (1 - p))

        full = logit(self.predict_proba_one(x))
        groups: dict[str, list[str]] = {}
        for name in x:
            groups.setdefault(base_feature(name), []).append(name)
        out = {}
        for base, names in groups.items():
            reduced = {k: v for k, v in x.items() if k not in names}
            out[base] = full - logit(self.predict_proba_one(reduced))
        return out


def make_model(name: str, seed: int = 0) -> RiskModel:
    """A fresh learner by name (one of :data:`LEARNER_NAMES`)."""
    if name == BOOSTED:
        from streams.risk.boosted import BoostedRiskModel

        return BoostedRiskModel(seed)
    return RiverRiskModel(name, seed)
