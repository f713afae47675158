"""Conformance suite of the risk core: every learner, the delayed-label join, the engine."""

from __future__ import annotations

import copy
import pickle
import random
from typing import Any

import pytest

from streams.risk import engine as engine_mod
from streams.risk.engine import EngineConfig, RiskEngine, dumps, loads
from streams.risk.features import HISTORY_STEP_S, RiskFeatureState
from streams.risk.labels import DelayedLabelBuffer, Pending, join_labels
from streams.risk.models import LEARNER_NAMES, RiverRiskModel, make_model

H = 3600.0


def ward(seed: int, patients: int = 30, hours: int = 30) -> list[dict[str, Any]]:
    """Simulated stays: septic patients drift to tachycardia, hypotension, high lactate."""
    rng = random.Random(seed)
    stays = []
    for n in range(patients):
        septic = n % 3 == 0
        onset = rng.randint(8, hours - 4) if septic else None
        rows = []
        for h in range(hours):
            sick = onset is not None and h >= onset - 6
            snap: dict[str, float | None] = {
                "heart_rate_per_min": rng.gauss(115 if sick else 85, 8),
                "map_mmhg": rng.gauss(62 if sick else 80, 5),
                "resp_rate_per_min": rng.gauss(24 if sick else 16, 3),
                "temperature_cel": rng.gauss(38.6 if sick else 37.0, 0.3) if h % 4 == 0 else None,
                "lactate_mmol_l": rng.gauss(3.5 if sick else 1.2, 0.4) if h % 6 == 0 else None,
                "sofa_cardiovascular": 1.0 if sick else 0.0,
                "sofa_renal": float(min(4, 1 + (h - onset) // 3)) if sick and onset else 0.0,
                "news2": 6.0 if sick else 2.0,
            }
            rows.append((h * H, snap, bool(sick)))
        stays.append({"id": f"p{n:04d}", "rows": rows, "age": 40 + n, "sex": "female"})
    return stays


def xy(seed: int) -> list[tuple[dict[str, float], bool]]:
    out = []
    for stay in ward(seed):
        state = RiskFeatureState()
        for at, snap, y in stay["rows"]:
            out.append((state.update(at, snap), y))
    return out


@pytest.fixture(scope="module")
def data() -> list[tuple[dict[str, float], bool]]:
    return xy(1)


@pytest.mark.parametrize("name", LEARNER_NAMES)
def test_learner_pickles_and_predicts_the_same_after(
    name: str, data: list[tuple[dict[str, float], bool]]
) -> None:
    model = make_model(name, seed=3)
    for x, y in data[:400]:
        model.learn_one(x, y)
    clone = pickle.loads(pickle.dumps(model))
    probe = [x for x, _ in data[400:460]]
    assert [clone.predict_proba_one(x) for x in probe] == [
        model.predict_proba_one(x) for x in probe
    ]
    # and both keep learning identically
    for x, y in data[460:500]:
        model.learn_one(x, y)
        clone.learn_one(x, y)
    assert [clone.predict_proba_one(x) for x in probe] == [
        model.predict_proba_one(x) for x in probe
    ]


@pytest.mark.parametrize("name", LEARNER_NAMES)
def test_learner_is_deterministic_with_a_seed(
    name: str, data: list[tuple[dict[str, float], bool]]
) -> None:
    a, b = make_model(name, seed=7), make_model(name, seed=7)
    for x, y in data[:400]:
        a.learn_one(x, y)
        b.learn_one(x, y)
    probe = [x for x, _ in data[400:]]
    assert [a.predict_proba_one(x) for x in probe] == [b.predict_proba_one(x) for x in probe]


@pytest.mark.parametrize("name", LEARNER_NAMES)
def test_learner_tolerates_missing_and_new_features_and_leaves_input_alone(
    name: str, data: list[tuple[dict[str, float], bool]]
) -> None:
    model = make_model(name, seed=0)
    assert 0.0 <= model.predict_proba_one({}) <= 1.0  # before any learning
    for i, (x, y) in enumerate(data[:300]):
        sparse = {k: v for j, (k, v) in enumerate(sorted(x.items())) if (i + j) % 3}
        model.learn_one(sparse, y)
    x = dict(data[300][0])
    before = copy.deepcopy(x)
    for probe in ({}, {"never_seen_feature": 5.0}, x):
        p = model.predict_proba_one(probe)
        assert 0.0 <= p <= 1.0
    model.explain_one(x, top=3)
    assert x == before


@pytest.mark.parametrize("name", ["logreg", "hoeffding", "gbdt"])
def test_learner_separates_septic_from_stable_hours(name: str) -> None:
    model = make_model(name)
    for x, y in xy(1) * 3:
        model.learn_one(x, y)
    held_out = xy(2)
    sick = [model.predict_proba_one(x) for x, y in held_out if y]
    well = [model.predict_proba_one(x) for x, y in held_out if not y]
    assert sum(sick) / len(sick) > sum(well) / len(well) + 0.3


def test_explanations_name_the_driving_feature() -> None:
    model = make_model("logreg")
    for x, y in xy(1) * 3:
        model.learn_one(x, y)
    sick = next(x for x, y in xy(2) if y and "lactate_mmol_l" in x)
    names = [name for name, _ in model.explain_one(sick, top=4)]
    assert names
    assert all("__" not in n for n in names)
    assert {"heart_rate_per_min", "map_mmhg", "news2", "lactate_mmol_l"} & set(names)


# ---- delayed labels --------------------------------------------------------------------


def test_external_label_in_force_is_the_latest_at_or_before_the_prediction() -> None:
    pending = [Pending(t * H, {}, 0.1) for t in (0, 1, 2, 5)]
    labels = [(1 * H, False), (2 * H, True), (4 * H, False)]
    joined = join_labels(pending, labels)
    assert [(e.at / H, y) for e, y in joined] == [(1, False), (2, True), (5, False)]


def test_mods_label_positive_on_new_failure_negative_only_after_the_horizon() -> None:
    buf = DelayedLabelBuffer(sample_every_s=0)
    buf.add("p", Pending(0.0, {}, 0.2, {"renal": 1, "liver": 0}))
    buf.add("p", Pending(1 * H, {}, 0.2, {"renal": 2, "liver": 0}))
    # 5 h: nothing happened yet, horizon (6 h) not passed for either: nothing settled
    assert buf.resolve_mods("p", 5 * H, {"renal": 2, "liver": 0}, None, horizon_s=6 * H) == []
    # 6.5 h: the first one's horizon has passed without an event -> negative
    settled = buf.resolve_mods("p", 6.5 * H, {"renal": 3, "liver": 0}, None, horizon_s=6 * H)
    assert [(e.at, y) for e, y in settled] == [(0.0, False), (1 * H, True)]
    assert buf.size() == 0


def test_buffer_is_bounded_and_samples() -> None:
    buf = DelayedLabelBuffer(sample_every_s=H, max_per_patient=5, max_patients=3)
    for t in range(0, 40):
        buf.add("a", Pending(t * 900.0, {}, 0.1))  # every 15 min: one in four kept
    assert len(buf.entries["a"]) == 5
    assert buf.dropped == 5
    for pid in "bcd":
        buf.add(pid, Pending(0.0, {}, 0.1))
    assert list(buf.entries) == ["b", "c", "d"]
    assert buf.dropped == 10


def test_feature_history_is_bounded_for_second_by_second_input() -> None:
    state = RiskFeatureState()
    for t in range(0, 8 * 3600, 1):
        state.update(float(t), {"heart_rate_per_min": 80.0 + (t % 7)})
    history = state.tracked["heart_rate_per_min"].history
    assert len(history) <= 6 * 3600 / HISTORY_STEP_S + 2


# ---- the engine: prequential order, cold start, checkpoints ------------------------------


class SpyModel(RiverRiskModel):
    """Records every call so the order of predictions, scores and learning can be checked."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        super().__init__("logreg")
        self.log = log

    def predict_proba_one(self, x: Any) -> float:
        self.log.append(("predict", tuple(sorted(x.items()))))
        return super().predict_proba_one(x)

    def learn_one(self, x: Any, y: bool) -> None:
        self.log.append(("learn", tuple(sorted(x.items()))))
        super().learn_one(x, y)


def run_ward(engine: RiskEngine, stays: list[dict[str, Any]]) -> list[Any]:
    out = []
    for stay in stays:
        engine.on_admission(stay["id"], 0.0, stay["age"], stay["sex"])
        for at, snap, _y in stay["rows"]:
            out.append(engine.on_snapshot(stay["id"], at, snap))
        for at, _snap, y in stay["rows"]:
            engine.on_label(stay["id"], "sepsis", at, y)
        engine.on_discharge(stay["id"], stay["rows"][-1][0])
    return out


def test_never_learns_a_label_before_its_prediction_is_scored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log: list[tuple[str, Any]] = []
    engine = RiskEngine(EngineConfig(outcome="sepsis", min_learned=10, min_positives=1))
    engine.model = SpyModel(log)
    scored: list[int] = []
    real_update = engine.monitor.update

    def spy_update(y: bool, p: float) -> None:
        scored.append(len(log))
        log.append(("score", p))
        real_update(y, p)

    monkeypatch.setattr(engine.monitor, "update", spy_update)
    stays = ward(5, patients=6, hours=12)
    stay = stays[0]
    engine.on_admission(stay["id"], 0.0, 50, "male")
    for at, snap, y in stay["rows"]:
        engine.on_snapshot(stay["id"], at, snap)
        engine.on_label(stay["id"], "sepsis", at, y)  # labels held ...
    assert not any(kind == "learn" for kind, _ in log)  # ... nothing learned before discharge
    run_ward(engine, stays[1:])
    engine.on_discharge(stay["id"], 12 * H)
    learned = [i for i, (kind, _) in enumerate(log) if kind == "learn"]
    assert learned
    for i in learned:
        x = log[i][1]
        predicted = [j for j, (kind, v) in enumerate(log[:i]) if kind == "predict" and v == x]
        assert predicted, "learned an input that was never predicted"
        assert log[i - 1][0] == "score", "label learned before its prediction was scored"
        assert predicted[0] < i - 1


def test_cold_start_uses_the_rule_score_until_enough_is_learned() -> None:
    engine = RiskEngine(EngineConfig(outcome="sepsis", min_learned=200, min_positives=20))
    predictions = run_ward(engine, ward(3, patients=30, hours=20))
    first, last = predictions[0], predictions[-1]
    assert first.cold_start
    assert not last.cold_start
    assert first.probability != first.model_probability or first.probability == 0.05
    assert last.probability == last.model_probability
    assert first.model_version != last.model_version


def test_checkpoint_restores_the_model_it_had(tmp_path: Any) -> None:
    engine = RiskEngine(EngineConfig(outcome="sepsis", min_learned=50, min_positives=5))
    run_ward(engine, ward(3, patients=12))
    (tmp_path / "ck").write_bytes(dumps(engine))
    restored = loads((tmp_path / "ck").read_bytes())
    later = ward(9, patients=3)
    assert [p.probability for p in run_ward(restored, later)] == [
        p.probability for p in run_ward(engine, later)
    ]
    assert restored.model_version == engine.model_version
    fresh = RiskEngine(EngineConfig(outcome="sepsis", min_learned=50, min_positives=5))
    assert fresh.model_version != engine.model_version


def test_checkpoint_of_another_format_is_refused() -> None:
    bad = pickle.dumps({"format": engine_mod.CHECKPOINT_FORMAT + 1, "engine": None})
    with pytest.raises(ValueError, match="format"):
        loads(bad)


def test_mods_engine_learns_from_the_stream_itself() -> None:
    engine = RiskEngine(
        EngineConfig(outcome="mods_progression_6h", min_learned=20, min_positives=2)
    )
    for stay in ward(4, patients=12, hours=30):
        for at, snap, _y in stay["rows"]:
            engine.on_snapshot(stay["id"], at, snap)
        engine.on_discharge(stay["id"], stay["rows"][-1][0])
    assert engine.model.learned > 100
    assert engine.model.positives > 0
    pred = engine.on_snapshot("new", 0.0, {"sofa_renal": 1.0})
    assert set(pred.per_organ) == set(engine_mod.SOFA_ORGANS)


def test_decision_threshold_follows_every_discharged_patient() -> None:
    """The threshold is cached between discharges; each new patient can move it."""
    from streams.risk.threshold import UtilityThreshold

    cut = UtilityThreshold(default=0.5, min_patients=1)
    cut.add_patient([0.01, 0.02, 0.03], [False, False, False])
    quiet = cut.threshold
    assert 0.03 < quiet < 0.05
    assert cut.threshold == quiet  # read twice: the same value
    for _ in range(5):  # septic patients whose scores rise 12 h before their sepsis time
        cut.add_patient([0.05] * 6 + [0.4] * 18, [False] * 12 + [True] * 12)
    assert 0.05 < cut.threshold <= 0.4
    restored = pickle.loads(pickle.dumps(cut))
    assert restored.threshold == cut.threshold
