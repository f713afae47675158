"""The ``gbdt`` learner: boosted trees refit on a bounded window of learned rows."""

from __future__ import annotations

import pickle
import random

import numpy as np

from streams.risk.boosted import BoostedRiskModel, RowWindow
from streams.risk.engine import EngineConfig, RiskEngine, dumps, loads
from streams.risk.utility import auroc


def u_shaped(seed: int, n: int) -> list[tuple[dict[str, float], bool]]:
    """Septic when the temperature is high *or* low; lactate only sometimes measured."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        temperature = rng.uniform(34.0, 41.0)
        septic = (temperature < 35.5 or temperature > 39.0) and rng.random() < 0.8
        x = {"temperature_cel": temperature, "heart_rate_per_min": rng.gauss(90, 15)}
        if rng.random() < 0.3:
            x["lactate_mmol_l"] = rng.gauss(3.0 if septic else 1.2, 0.5)
        rows.append((x, septic))
    return rows


def small(**kw: int) -> BoostedRiskModel:
    return BoostedRiskModel(seed=1, first_fit_rows=300, min_positives=30, rounds=60, **kw)


def test_learns_what_a_line_cannot_and_the_logistic_regression_does_not() -> None:
    model = small()
    for x, y in u_shaped(1, 2000):
        model.learn_one(x, y)
    assert model.fits >= 2
    held = u_shaped(2, 1000)
    y = np.array([label for _, label in held])
    trees = auroc(y, np.array([model.predict_proba_one(x) for x, _ in held]))
    line = auroc(y, np.array([model.until_fit.predict_proba_one(x) for x, _ in held]))
    assert trees > 0.85
    assert trees > line + 0.15


def test_refits_first_at_enough_rows_and_positives_then_doubling_then_every_n() -> None:
    model = small(refit_every_rows=1000)
    fitted_at = []
    for x, y in u_shaped(3, 4000):
        before = model.fits
        model.learn_one(x, y)
        if model.fits > before:
            fitted_at.append(model.learned)
    assert fitted_at == [300, 600, 1200, 2200, 3200]
    none_positive = small()
    for x, _ in u_shaped(3, 1000):
        none_positive.learn_one(x, False)
    assert none_positive.fits == 0  # nothing to learn from: the logistic regression answers
    assert 0.0 <= none_positive.predict_proba_one({"temperature_cel": 40.0}) <= 1.0


def test_predicts_only_from_rows_learned_before_the_fit() -> None:
    model = small(refit_every_rows=10_000)
    rows = u_shaped(4, 700)
    for x, y in rows[:600]:
        model.learn_one(x, y)
    probe = [x for x, _ in rows[600:650]]
    before = [model.predict_proba_one(x) for x in probe]
    for x, y in rows[600:700]:  # learned, but not yet fit on: the trees stay as they were
        model.learn_one(x, y)
    assert model.fits == 2
    assert [model.predict_proba_one(x) for x in probe] == before


def test_pickled_model_predicts_and_refits_the_same() -> None:
    model = small()
    rows = u_shaped(5, 1300)
    for x, y in rows[:700]:
        model.learn_one(x, y)
    clone = pickle.loads(pickle.dumps(model))
    probe = [x for x, _ in rows[:100]]
    assert [clone.predict_proba_one(x) for x in probe] == [
        model.predict_proba_one(x) for x in probe
    ]
    for x, y in rows[700:]:  # a refit at 1200 rows, from the pickled window
        model.learn_one(x, y)
        clone.learn_one(x, y)
    assert model.fits == clone.fits == 3
    assert [clone.predict_proba_one(x) for x in probe] == [
        model.predict_proba_one(x) for x in probe
    ]


def test_window_keeps_the_latest_rows_only() -> None:
    window = RowWindow(capacity=1000, chunk_rows=64)
    for i in range(5000):
        window.add({"n": float(i)} | ({"late": 1.0} if i > 4900 else {}), i % 2 == 0)
    x, y = window.matrix()
    assert len(window) == len(y) == 1000
    assert x[:, 0].tolist() == [float(i) for i in range(4000, 5000)]
    assert np.isnan(x[:, 1][:-99]).all()
    assert (x[:, 1][-99:] == 1.0).all()
    # memory: at most a chunk of rows over, plus the open chunk's unused rows
    assert sum(len(c[1]) for c in window._chunks) <= 1000 + 2 * 64


def test_explanations_are_the_trees_contributions_per_snapshot_feature() -> None:
    model = small()
    for x, y in u_shaped(6, 1500):
        model.learn_one(x, y)
    cold = {"temperature_cel": 34.2, "heart_rate_per_min": 88.0}
    top = model.explain_one(cold, top=3)
    assert top[0][0] == "temperature_cel"
    assert top[0][1] > 0
    assert {name for name, _ in top} <= {"temperature_cel", "heart_rate_per_min", "lactate_mmol_l"}


def test_export_carries_the_trees_not_the_rows() -> None:
    engine = RiskEngine(EngineConfig(outcome="sepsis", learner="gbdt", seed=2))
    rows = u_shaped(7, 2500)
    for x, y in rows:
        engine.model.learn_one(x, y)
    assert engine.model.fits >= 1
    exported = loads(dumps(engine.for_export()))
    model = exported.model
    assert isinstance(model, BoostedRiskModel)
    assert len(model.window) == 0
    probe = [x for x, _ in rows[:50]]
    assert [model.predict_proba_one(x) for x in probe] == [
        engine.model.predict_proba_one(x) for x in probe
    ]
    fits = model.fits
    for x, y in rows[:1000]:  # fewer rows than the trees were fit on: no refit on them yet
        model.learn_one(x, y)
    assert model.fits == fits
    kept = loads(dumps(engine.without_patients())).model
    assert isinstance(kept, BoostedRiskModel)
    assert len(kept.window) == 2500
