"""The risk engine: one outcome, one model, fed snapshots and context events in event time.

``on_snapshot`` turns a patient's feature snapshot into a model input (only what is
known at its time), predicts, buffers the input with the probability and returns
what to publish. Labels arrive later (:mod:`streams.risk.labels`): each joined pair
is first scored by the prequential monitor, then learned - never the other way round.
Until the model has learned ``min_learned`` labels with ``min_positives`` positives,
the published probability is the rule-based fallback (:mod:`streams.risk.fallback`).

Outcomes (:data:`OUTCOMES`):

- ``mods_progression_6h``: new organ failure or SOFA rise >= 2 within 6 h, labelled from
  the stream; one small logistic model per SOFA organ gives ``per_organ`` (new failure
  of that organ within the horizon);
- ``sepsis``: the external ``OutcomeLabel`` of that name (PhysioNet 2019 SepsisLabel),
  joined at discharge; its decision threshold maximises the challenge utility over
  patients already discharged (:mod:`streams.risk.threshold`).

The whole engine pickles: that is its checkpoint (:func:`dumps` / :func:`loads`).
"""

from __future__ import annotations

import io
import pickle
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.risk.fallback import RULE_THRESHOLD, rule_score
from streams.risk.features import RiskFeatureState
from streams.risk.labels import DelayedLabelBuffer, Pending, join_labels, known_sum
from streams.risk.models import RiskModel, make_model
from streams.risk.monitor import PrequentialMonitor
from streams.risk.threshold import UtilityThreshold

CHECKPOINT_FORMAT = 1
SOFA_ORGANS = ("respiratory", "coagulation", "liver", "cardiovascular", "cns", "renal")


@dataclass(frozen=True)
class OutcomeSpec:
    name: str
    horizon_h: float | None  # None: an external label
    external: bool
    threshold: float  # decision threshold when none is learned


OUTCOMES: Mapping[str, OutcomeSpec] = {
    "mods_progression_6h": OutcomeSpec("mods_progression_6h", 6.0, False, 0.3),
    "sepsis": OutcomeSpec("sepsis", None, True, 0.1),
}


@dataclass(frozen=True)
class Prediction:
    """What the engine publishes for one snapshot."""

    patient_id: str
    at: float
    outcome: str
    probability: float
    model_probability: float
    per_organ: dict[str, float]
    cold_start: bool
    threshold: float
    contributions: list[tuple[str, float, float | None]]  # (feature, log-odds, value)
    model_id: str
    model_version: str


@dataclass
class EngineConfig:
    outcome: str = "sepsis"
    learner: str = "gbdt"
    seed: int = 0
    min_learned: int = 2000
    min_positives: int = 50
    sample_every_s: float = 3600.0
    explain_top: int = 5
    explain_min_probability: float = 0.0  # explain only at or above this (cost of occlusion)
    max_patients: int = 5000
    max_per_patient: int = 1000


@dataclass
class _Patient:
    features: RiskFeatureState = field(default_factory=RiskFeatureState)
    labels: list[tuple[float, bool]] = field(default_factory=list)
    last_at: float = 0.0


@dataclass
class RiskEngine:
    config: EngineConfig = field(default_factory=EngineConfig)
    lineage: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    model: RiskModel = field(init=False)
    organ_models: dict[str, RiskModel] = field(init=False)
    monitor: PrequentialMonitor = field(default_factory=PrequentialMonitor)
    threshold: UtilityThreshold = field(init=False)
    buffer: DelayedLabelBuffer = field(init=False)
    patients: dict[str, _Patient] = field(default_factory=dict)
    predictions: int = 0
    positions: dict[str, int] = field(default_factory=dict)  # consumed offsets, set by a shell

    def __post_init__(self) -> None:
        if self.config.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.config.outcome!r}; known {sorted(OUTCOMES)}")
        self.spec = OUTCOMES[self.config.outcome]
        self.model = make_model(self.config.learner, self.config.seed)
        self.organ_models = (
            {} if self.spec.external else {o: make_model("logreg") for o in SOFA_ORGANS}
        )
        self.threshold = UtilityThreshold(default=self.spec.threshold)
        self.buffer = DelayedLabelBuffer(
            sample_every_s=self.config.sample_every_s,
            max_per_patient=self.config.max_per_patient,
            max_patients=self.config.max_patients,
        )

    # ---- identity ----------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return f"{self.spec.name}:{self.config.learner}"

    @property
    def model_version(self) -> str:
        """``<learner>-<lineage>.<labels learned>``: a new version with every label."""
        return f"{self.config.learner}-{self.lineage}.{self.model.learned}"

    @property
    def cold(self) -> bool:
        return (
            self.model.learned < self.config.min_learned
            or self.model.positives < self.config.min_positives
        )

    # ---- inputs ------------------------------------------------------------------------

    def _patient(self, patient_id: str) -> _Patient:
        patient = self.patients.get(patient_id)
        if patient is None:
            patient = self.patients[patient_id] = _Patient()
        return patient

    def on_admission(self, patient_id: str, at: float, age_years: float | None, sex: str) -> None:
        self._patient(patient_id).features.admit(at, age_years, sex)

    def on_label(self, patient_id: str, outcome: str, at: float, label: bool) -> None:
        """An external outcome label (kept until discharge, then joined)."""
        if outcome == self.spec.name and self.spec.external:
            self._patient(patient_id).labels.append((at, bool(label)))

    def on_snapshot(
        self,
        patient_id: str,
        at: float,
        features: Mapping[str, float | None],
        organs: Mapping[str, int | None] | None = None,
    ) -> Prediction:
        """Predict from the snapshot at ``at``; settle the MODS labels it decides."""
        patient = self._patient(patient_id)
        patient.last_at = at
        organs = dict(organs) if organs is not None else _organs_of(features)
        if not self.spec.external and self.spec.horizon_h is not None:
            for entry, y in self.buffer.resolve_mods(
                patient_id, at, organs, None, horizon_s=self.spec.horizon_h * 3600.0
            ):
                self._learn(entry, y, at, organ_labels=_organ_failures(entry.organs, organs))
            self.monitor.end_join(at)
        x = patient.features.update(at, features)
        p_model = self.model.predict_proba_one(x)
        cold = self.cold
        p = rule_score(features) if cold else p_model
        per_organ = {o: m.predict_proba_one(x) for o, m in self.organ_models.items()}
        threshold = RULE_THRESHOLD if cold else self._threshold()
        contributions: list[tuple[str, float, float | None]] = []
        # linear: exact and cheap, always; otherwise occlusion (one prediction per input
        # feature), only where it may be read: at or above the decision threshold
        explain = self.model.is_linear or p >= max(threshold, self.config.explain_min_probability)
        if not cold and explain and self.config.explain_top:
            contributions = [
                (name, value, x.get(name))
                for name, value in self.model.explain_one(x, top=self.config.explain_top)
            ]
        self.buffer.add(
            patient_id,
            Pending(at, x, p_model, organs, known_sum(organs, organs), p_published=p),
        )
        self.predictions += 1
        return Prediction(
            patient_id=patient_id,
            at=at,
            outcome=self.spec.name,
            probability=p,
            model_probability=p_model,
            per_organ=per_organ,
            cold_start=cold,
            threshold=threshold,
            contributions=contributions,
            model_id=self.model_id,
            model_version=self.model_version,
        )

    def on_discharge(self, patient_id: str, at: float) -> int:
        """Join the patient's buffered predictions to its labels and learn; how many."""
        patient = self.patients.pop(patient_id, None)
        pending = self.buffer.pop(patient_id)
        if patient is None or not self.spec.external:
            return 0  # MODS entries still open at discharge are censored
        joined = join_labels(pending, patient.labels)
        for entry, y in joined:
            self._learn(entry, y, at)
        self.monitor.end_join(at)
        if joined:
            self.threshold.add_patient([e.p for e, _ in joined], [y for _, y in joined])
        return len(joined)

    def expire(self, now: float, idle_s: float = 7 * 86400.0) -> int:
        """Forget patients silent for ``idle_s`` (never discharged): bounded state."""
        gone = [pid for pid, p in self.patients.items() if now - p.last_at > idle_s]
        for pid in gone:
            self.patients.pop(pid)
            self.buffer.dropped += len(self.buffer.pop(pid))
        return len(gone)

    def _learn(
        self, entry: Pending, y: bool, at: float, organ_labels: Mapping[str, bool] | None = None
    ) -> None:
        self.monitor.update(y, entry.p)  # scored first ...
        self.model.learn_one(entry.x, y)  # ... then learned
        for organ, model in self.organ_models.items():
            model.learn_one(entry.x, bool(organ_labels and organ_labels.get(organ)))

    def _threshold(self) -> float:
        if self.spec.external and self.spec.name == "sepsis":
            return self.threshold.threshold
        return self.spec.threshold

    # ---- checkpoints -------------------------------------------------------------------

    def without_patients(self) -> RiskEngine:
        """A copy holding the learned model only, with its read positions and patients'
        state gone (for a new topic set: ``vigil evaluate`` after pretraining)."""
        clone: RiskEngine = loads(dumps(self))
        clone.patients.clear()
        clone.buffer.entries.clear()
        clone.positions.clear()
        return clone

    def for_export(self) -> RiskEngine:
        """:meth:`without_patients`, and without the rows a learner keeps to refit on
        (``gbdt``'s window): what leaves the site is a model, no patient data."""
        clone = self.without_patients()
        forget = getattr(clone.model, "forget_rows", None)
        if forget is not None:
            forget()
        return clone


def _organs_of(features: Mapping[str, float | None]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for organ in SOFA_ORGANS:
        value = features.get(f"sofa_{organ}")
        out[organ] = None if value is None else int(value)
    return out


def _organ_failures(
    before: Mapping[str, int | None], now: Mapping[str, int | None]
) -> dict[str, bool]:
    out = {}
    for organ in SOFA_ORGANS:
        b, n = before.get(organ), now.get(organ)
        out[organ] = b is not None and n is not None and b < 3 <= n
    return out


def dumps(engine: RiskEngine, held: Any = None) -> bytes:
    """A versioned checkpoint of the whole engine, with what its shell still ``held``
    (context read but not yet applied: it is after the saved read positions' past)."""
    buffer = io.BytesIO()
    pickle.dump({"format": CHECKPOINT_FORMAT, "engine": engine, "held": held}, buffer, protocol=5)
    return buffer.getvalue()


def load_checkpoint(data: bytes) -> tuple[RiskEngine, Any]:
    """The engine and the shell's held context back from :func:`dumps`; refuses another
    checkpoint format. A checkpoint written without ``held`` gives None."""
    loaded: Any = pickle.loads(data)  # noqa: S301 - our own checkpoint store, see module doc
    if not isinstance(loaded, dict) or loaded.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("not a Vigil risk checkpoint of format 1")
    engine = loaded["engine"]
    if not isinstance(engine, RiskEngine):
        raise ValueError("checkpoint holds no risk engine")
    return engine, loaded.get("held")


def loads(data: bytes) -> RiskEngine:
    """The engine back from :func:`dumps` (see :func:`load_checkpoint`)."""
    return load_checkpoint(data)[0]
