"""Risk-model inputs from a patient's series of feature snapshots (sparse, irregular data).

The worker's :class:`~schemas.derived.FeatureSnapshot` says what is known *now*; a
feature is ``None`` once its input is stale. ICU data are sparse and irregular
(labs a few times a day, hourly charting), so the model also gets, per feature:

- ``<name>``: the last known value, carried forward (absent until first known);
- ``<name>__age_h``: hours since that value last changed or appeared (capped at
  :data:`AGE_CAP_H`; the cap also means "never measured") - measurement time and
  missingness in one number (Che 2018 and the PhysioNet 2019 entries used both);
- for the trend features (:data:`TREND_FEATURES`): ``<name>__delta_6h`` (now minus
  the value carried at least 6 h ago) and ``<name>__dev_baseline`` (now minus the
  patient's own running mean: a patient's baseline, not a population norm);

plus ``hours_since_admission``, ``age_years`` and ``sex_male`` from the Admission.
Only the past is used: every value is what was known at the snapshot's time.
State is bounded (one value, one time, a short history per feature) and JSON-able.

>>> state = RiskFeatureState()
>>> x = state.update(0.0, {"heart_rate_per_min": 90.0, "lactate_mmol_l": None})
>>> x["heart_rate_per_min"], x["heart_rate_per_min__age_h"], "lactate_mmol_l" in x
(90.0, 0.0, False)
>>> x = state.update(7 * 3600.0, {"heart_rate_per_min": 120.0})
>>> x["heart_rate_per_min__delta_6h"], x["heart_rate_per_min__dev_baseline"]
(30.0, 15.0)
>>> state.update(8 * 3600.0, {})["heart_rate_per_min__age_h"]
1.0

References: Che Z et al. Recurrent neural networks for multivariate time series with
missing values. Sci Rep 2018;8:6085. Reyna MA et al. Crit Care Med 2020;48(2):210-217.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.features.catalog import FEATURES

AGE_CAP_H = 72.0
DELTA_S = 6 * 3600.0
HISTORY_STEP_S = 1800.0  # history points kept at most every 30 min: bounded for 1 Hz inputs

INPUT_FEATURES: tuple[str, ...] = tuple(
    name for name, spec in FEATURES.items() if spec.organ not in ("technical", "risk")
)
"""Snapshot features the risk models read (technical data ages are about devices; the
risk scores themselves are rule inputs, never in a snapshot)."""

TREND_FEATURES: frozenset[str] = frozenset(
    {
        "heart_rate_per_min",
        "sbp_mmhg",
        "map_mmhg",
        "nbp_map_mmhg",
        "shock_index",
        "spo2_pct",
        "resp_rate_per_min",
        "temperature_cel",
        "fio2_pct",
        "sf_ratio",
        "pf_ratio_mmhg",
        "lactate_mmol_l",
        "creatinine_mg_dl",
        "platelets_10e3_ul",
        "bilirubin_mg_dl",
        "gcs_total",
        "news2",
        "qsofa",
        "sofa_cardiovascular",
        "sofa_respiratory",
        "sofa_renal",
    }
)

_EPS = 1e-9


@dataclass
class _Tracked:
    value: float
    changed_at: float
    mean_sum: float = 0.0
    mean_n: int = 0
    history: list[tuple[float, float]] = field(default_factory=list)  # (t, value), 6 h+

    def to_state(self) -> list[Any]:
        return [self.value, self.changed_at, self.mean_sum, self.mean_n, self.history]

    @classmethod
    def from_state(cls, state: list[Any]) -> _Tracked:
        value, changed_at, mean_sum, mean_n, history = state
        return cls(value, changed_at, mean_sum, mean_n, [(t, v) for t, v in history])


@dataclass
class RiskFeatureState:
    """One patient's carried-forward values, measurement times, baselines and trends."""

    tracked: dict[str, _Tracked] = field(default_factory=dict)
    admitted_at: float | None = None
    first_seen_at: float | None = None
    age_years: float | None = None
    sex_male: float | None = None

    def admit(self, at: float, age_years: float | None, sex: str) -> None:
        """Demographics and admission time from an Admission event."""
        self.admitted_at = at
        self.age_years = age_years
        self.sex_male = 1.0 if sex == "male" else 0.0 if sex == "female" else None

    def update(self, at: float, features: Mapping[str, float | None]) -> dict[str, float]:
        """Fold in the snapshot at event time ``at`` (seconds); the model input as of ``at``."""
        if self.first_seen_at is None:
            self.first_seen_at = at
        for name in INPUT_FEATURES:
            value = features.get(name)
            if value is None:
                continue
            value = float(value)
            entry = self.tracked.get(name)
            if entry is None:
                entry = self.tracked[name] = _Tracked(value, at)
            elif abs(value - entry.value) > _EPS:
                entry.value, entry.changed_at = value, at
            if name in TREND_FEATURES:
                history = entry.history
                if not history or at - history[-1][0] >= HISTORY_STEP_S:
                    entry.mean_sum += value
                    entry.mean_n += 1
                    history.append((at, value))
                    while len(history) > 2 and history[1][0] <= at - DELTA_S:
                        history.pop(0)
        return self.vector(at)

    def vector(self, at: float) -> dict[str, float]:
        """The model input as of ``at`` (no update)."""
        x: dict[str, float] = {}
        for name in INPUT_FEATURES:
            entry = self.tracked.get(name)
            if entry is None:
                x[name + "__age_h"] = AGE_CAP_H
                continue
            x[name] = entry.value
            x[name + "__age_h"] = min(AGE_CAP_H, max(0.0, at - entry.changed_at) / 3600.0)
            if name in TREND_FEATURES and entry.history:
                then_at, then = entry.history[0]
                if at - then_at >= DELTA_S:
                    x[name + "__delta_6h"] = entry.value - then
                x[name + "__dev_baseline"] = entry.value - entry.mean_sum / max(1, entry.mean_n)
        start = self.admitted_at if self.admitted_at is not None else self.first_seen_at
        if start is not None:
            x["hours_since_admission"] = max(0.0, at - start) / 3600.0
        if self.age_years is not None:
            x["age_years"] = self.age_years
        if self.sex_male is not None:
            x["sex_male"] = self.sex_male
        return x

    def to_state(self) -> dict[str, Any]:
        return {
            "tracked": {name: entry.to_state() for name, entry in self.tracked.items()},
            "admitted_at": self.admitted_at,
            "first_seen_at": self.first_seen_at,
            "age_years": self.age_years,
            "sex_male": self.sex_male,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RiskFeatureState:
        return cls(
            tracked={n: _Tracked.from_state(s) for n, s in state["tracked"].items()},
            admitted_at=state["admitted_at"],
            first_seen_at=state["first_seen_at"],
            age_years=state["age_years"],
            sex_male=state["sex_male"],
        )


def base_feature(name: str) -> str:
    """The snapshot feature a model input derives from (``x__age_h`` -> ``x``).

    >>> base_feature("lactate_mmol_l__delta_6h"), base_feature("age_years")
    ('lactate_mmol_l', 'age_years')
    """
    return name.split("__", 1)[0]
