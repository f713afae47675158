"""Renal features: KDIGO staging (creatinine, urine output), furosemide stress test, CRRT exit.

Source of every threshold: /work/shared/CLINICAL.md "Renal and venous
congestion"; the KDIGO staging itself lives in :mod:`streams.features.kdigo`.

Urine output is charted volume over periods (context ``UrineOutput``), spread into
clock hours (``HourlyVolumes``); an hour is known when charting covers at least
half of it. The ``urine_output_*`` features use the N complete clock hours before
``at`` and are None unless every one of those hours is known; the per-kg ones
(and the urine-output KDIGO stage) also need the patient's weight
(``facts.weight_kg``): without it they are None (CLINICAL.md: "needs patient
weight; without it, say so").

>>> from datetime import UTC, datetime
>>> from schemas.common import SourceInfo
>>> def urine(end_h: int, volume_ml: float) -> UrineOutput:
...     end, start = (datetime.fromtimestamp(h * HOUR_S, UTC) for h in (end_h, end_h - 1))
...     return UrineOutput(patient_id="p1", observed_at=end, received_at=end,
...                        source=SourceInfo(adapter="context"), volume_ml=volume_ml,
...                        period_start=start)
>>> r = RenalFeatures()
>>> for hour in range(1, 25):  # 24 h of 35 mL/h in a 70-kg patient
...     r.observe_context(urine(hour, 35.0), hour * HOUR_S)
>>> f = r.features(24 * HOUR_S, PatientFacts(weight_kg=70.0))
>>> f["urine_output_6h_ml_kg_h"], f["urine_output_24h_ml"], f["kdigo_urine_output_stage"]
(0.5, 840.0, 0)
>>> r.features(24 * HOUR_S, PatientFacts())["kdigo_urine_output_stage"] is None  # no weight
True
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from schemas.codes import Quantity
from schemas.context import Drug, DrugDose, Infusion, PatientContext, UrineOutput
from streams.features.base import Features, PatientFacts
from streams.features.kdigo import (
    BASELINE_WINDOW_S,
    CREATININE_FRESH_S,
    creatinine_baseline_mg_dl,
    kdigo_creatinine_stage,
    kdigo_stage,
    kdigo_urine_output_stage,
)
from streams.features.windows import DAY_S, HOUR_S, HourlyVolumes, SparseSeries

RRT_LOOKBACK_S = DAY_S
"""Blood flow > 0 on the CRRT machine within 24 h counts as RRT started (KDIGO stage 3)."""
URINE_HOURS = 24
FST_WINDOW_S = 2 * HOUR_S
FST_NONRESPONSE_ML = 200.0
"""2-h urine < 200 mL after furosemide predicts progression to KDIGO 3 (Chawla 2013)."""
FST_DOSE_MG_KG = 1.0
FST_DOSE_DIURETIC_EXPOSED_MG_KG = 1.5
"""Standard stress dose: 1.0 mg/kg IV, 1.5 mg/kg if diuretic-exposed (Chawla 2013)."""
FURO_LOOKBACK_S = DAY_S
LIBERATION_URINE_ML = 400.0
LIBERATION_URINE_DIURETIC_ML = 2000.0
"""CRRT liberation: urine > 400 mL/24 h without diuretics, > 2000 mL with (CLINICAL.md)."""
_HOUR_COVERED = 0.5
"""An hour is known when charting covers at least this fraction of it (HourlyVolumes)."""

NAMES = (
    "creatinine_mg_dl",
    "creatinine_baseline_mg_dl",
    "kdigo_creatinine_stage",
    "urine_output_6h_ml_kg_h",
    "urine_output_12h_ml_kg_h",
    "urine_output_24h_ml_kg_h",
    "urine_output_24h_ml",
    "kdigo_urine_output_stage",
    "kdigo_stage",
    "furosemide_stress_urine_2h_ml",
    "furosemide_stress_nonresponse",
    "crrt_liberation_signal",
)


class StepSeries(SparseSeries):
    """A step-held setting over time (an infusion rate), trimmed without losing the as-of value.

    Changes may arrive out of order. Entries older than ``horizon_s`` before the
    newest are dropped, except the last of them, which still holds at the start
    of the horizon.

    >>> s = StepSeries(horizon_s=DAY_S)
    >>> s.set(0.0, 5.0); s.set(3 * DAY_S, 0.0)   # ran for 3 days, then stopped
    >>> s.positive_between(2.5 * DAY_S, 3 * DAY_S)
    True
    >>> s.positive_between(3 * DAY_S, 4 * DAY_S)
    False
    """

    def set(self, t: float, value: float) -> None:
        """The setting changed to ``value`` at ``t`` (out-of-order changes placed by time)."""
        self.insert(t, value)

    def _first_kept(self, horizon: float) -> int:
        # keep the last change at or before the horizon: it is still in force after it
        return bisect.bisect_right(self.times, horizon) - 1

    def positive_between(self, start: float, end: float) -> bool:
        """Whether the setting was > 0 at some time in ``(start, end]``."""
        i = bisect.bisect_right(self.times, start)
        if i and self.values[i - 1] > 0:
            return True
        j = bisect.bisect_right(self.times, end)
        return any(v > 0 for v in self.values[i:j])


def urine_between(volumes: HourlyVolumes, start: float, end: float) -> float | None:
    """Urine charted in ``(start, end]``, each hour's volume taken as evenly spread.

    None when an hour the interval touches is not known (charted < half of it).

    >>> v = HourlyVolumes(horizon_h=26)
    >>> v.add(3 * HOUR_S, 180.0, period_start=0.0)  # 60 mL/h for 3 h
    >>> urine_between(v, 0.5 * HOUR_S, 2.5 * HOUR_S)
    120.0
    >>> urine_between(v, 2.5 * HOUR_S, 4.5 * HOUR_S) is None  # hour 3 not charted yet
    True
    """
    total = 0.0
    for hour in range(int(start // HOUR_S), math.ceil(end / HOUR_S)):
        lo = hour * HOUR_S
        overlap = min(lo + HOUR_S, end) - max(lo, start)
        if overlap <= 0:
            continue
        if volumes.covered_s.get(hour, 0.0) < _HOUR_COVERED * HOUR_S:
            return None
        total += volumes.volume.get(hour, 0.0) * overlap / HOUR_S
    return total


@dataclass(frozen=True)
class FurosemideStressTest:
    """The furosemide stress test of the latest furosemide dose (Chawla, Crit Care 2013).

    ``standard_dose``: the dose reached 1.0 mg/kg (1.5 mg/kg when the patient is
    diuretic-exposed), None without weight. ``urine_2h_ml`` and ``nonresponse``
    are None until 2 h have passed and those hours are charted.
    """

    dose_at_s: float
    dose_mg: float
    dose_mg_kg: float | None
    standard_dose: bool | None
    urine_2h_ml: float | None
    nonresponse: int | None


class RenalFeatures:
    """Renal features of one patient (catalogue organ ``renal``).

    - Creatinine (labs, 7-day history): latest within 48 h, baseline and KDIGO
      creatinine stage from :mod:`streams.features.kdigo`; RRT started = CRRT
      blood flow > 0 seen within 24 h (KDIGO stage 3).
    - Urine output per kg over 6/12/24 h, 24-h volume, KDIGO urine-output stage
      (see the module doc for when they are known); ``kdigo_stage`` is the higher
      known of the two stages.
    - Furosemide stress test (Chawla 2013; CLINICAL.md): urine in the 2 h after
      the latest furosemide dose of the last 24 h (any dose; whether it was the
      standard 1.0 mg/kg is :meth:`furosemide_stress_test`); non-response = 2-h
      urine < 200 mL. None before 2 h, when those hours are not charted, or with
      no dose in 24 h.
    - CRRT liberation signal (CLINICAL.md, pooled sens 66 %, spec 74 %): on CRRT
      (``facts.on_crrt``), 24-h urine > 400 mL, or > 2000 mL when furosemide was
      given in the last 24 h (a dose or an infusion running at a rate > 0). None
      when not on CRRT or the 24 h of urine are not all charted.
    """

    quantities: ClassVar[frozenset[Quantity]] = frozenset(
        {
            Quantity.CREATININE,
            Quantity.CRRT_BLOOD_FLOW,
        }
    )
    """The measurements this group reads (the caller routes only these to it)."""

    def __init__(self) -> None:
        self.creatinine = SparseSeries(horizon_s=BASELINE_WINDOW_S)
        self.urine = HourlyVolumes(horizon_h=URINE_HOURS + 2)
        self.furosemide_doses = SparseSeries(horizon_s=FURO_LOOKBACK_S)
        self.furosemide_infusion = StepSeries(horizon_s=FURO_LOOKBACK_S)
        self.blood_flow_last_positive_s: float | None = None
        self._creatinine_version = 0
        self._urine_version = 0
        self._creatinine_key: tuple[int, int, bool, bool] | None = None
        self._creatinine_cache: tuple[float | None, int | None] = (None, None)
        self._urine_key: tuple[int, int] | None = None
        self._urine_hourly: list[float | None] = []
        self._urine_features_key: tuple[int, int, float | None] | None = None
        self._urine_features: dict[str, float | None] = {}
        self._dose_version = 0
        self._stress_key: tuple[int, int, int, int] | None = None
        self._stress: tuple[float | None, int | None] = (None, None)

    # ---- inputs --------------------------------------------------------------------

    def observe(self, quantity: Quantity, at_s: float, value: float) -> None:
        if quantity is Quantity.CREATININE:
            self.creatinine.insert(at_s, value)
            self._creatinine_version += 1
        elif quantity is Quantity.CRRT_BLOOD_FLOW and value > 0:
            last = self.blood_flow_last_positive_s
            self.blood_flow_last_positive_s = at_s if last is None else max(last, at_s)

    def observe_context(self, event: PatientContext, at_s: float) -> None:
        if isinstance(event, UrineOutput):
            start = None if event.period_start is None else event.period_start.timestamp()
            self.urine.add(at_s, event.volume_ml, period_start=start)
            self._urine_version += 1
        elif isinstance(event, DrugDose) and event.drug is Drug.FUROSEMIDE:
            self.furosemide_doses.insert(at_s, event.dose_mg)
            self._dose_version += 1
        elif isinstance(event, Infusion) and event.drug is Drug.FUROSEMIDE:
            self.furosemide_infusion.set(at_s, event.rate)

    # ---- features ------------------------------------------------------------------

    def _creatinine(self, at_s: float, rrt_started: bool) -> tuple[float | None, int | None]:
        """(baseline, KDIGO creatinine stage), recomputed only when an input changed.

        Both depend on ``at`` only through which values are at or before it and
        whether the latest of those is fresh (48 h), so that is the cache key.
        """
        series = self.creatinine
        index = bisect.bisect_right(series.times, at_s)
        fresh = bool(index) and at_s - series.times[index - 1] <= CREATININE_FRESH_S
        key = (self._creatinine_version, index, fresh, rrt_started)
        if key != self._creatinine_key:
            history = list(zip(series.times, series.values, strict=True))
            self._creatinine_cache = (
                creatinine_baseline_mg_dl(history, at_s),
                kdigo_creatinine_stage(history, at_s, rrt_started=rrt_started),
            )
            self._creatinine_key = key
        return self._creatinine_cache

    def _hourly_urine(self, at_s: float) -> list[float | None]:
        """Volumes of the 24 complete clock hours before ``at``, oldest first."""
        key = (int(at_s // HOUR_S), self._urine_version)
        if key != self._urine_key:
            self._urine_hourly = self.urine.hourly(at_s, URINE_HOURS, _HOUR_COVERED)
            self._urine_key = key
        return self._urine_hourly

    def furosemide_stress_test(
        self, at_s: float, facts: PatientFacts
    ) -> FurosemideStressTest | None:
        """The stress test of the latest furosemide dose within 24 h, None without one."""
        dose = self.furosemide_doses.as_of(at_s)
        if dose is None or at_s - dose[0] > FURO_LOOKBACK_S:
            return None
        dose_at, dose_mg = dose
        mg_kg = dose_mg / facts.weight_kg if facts.weight_kg else None
        wanted = FST_DOSE_DIURETIC_EXPOSED_MG_KG if facts.diuretic_exposed else FST_DOSE_MG_KG
        urine: float | None = None
        if at_s - dose_at >= FST_WINDOW_S:
            urine = urine_between(self.urine, dose_at, dose_at + FST_WINDOW_S)
        return FurosemideStressTest(
            dose_at_s=dose_at,
            dose_mg=dose_mg,
            dose_mg_kg=mg_kg,
            standard_dose=None if mg_kg is None else mg_kg >= wanted,
            urine_2h_ml=urine,
            nonresponse=None if urine is None else int(urine < FST_NONRESPONSE_ML),
        )

    def furosemide_given(self, at_s: float) -> bool:
        """Furosemide in ``(at - 24 h, at]``: a dose, or an infusion running at a rate > 0."""
        start = at_s - FURO_LOOKBACK_S
        doses = self.furosemide_doses.times
        if bisect.bisect_right(doses, at_s) > bisect.bisect_right(doses, start):
            return True
        return self.furosemide_infusion.positive_between(start, at_s)

    def _urine_output(self, at_s: float, weight_kg: float | None) -> dict[str, float | None]:
        """Urine-output features, recomputed once per clock hour or new chart."""
        key = (int(at_s // HOUR_S), self._urine_version, weight_kg)
        if key != self._urine_features_key:
            hourly = self._hourly_urine(at_s)
            charted = [v for v in hourly if v is not None]
            per_kg: list[float | None] | None = None
            if weight_kg:
                per_kg = [None if v is None else v / weight_kg for v in hourly]
            self._urine_features = {
                "urine_output_6h_ml_kg_h": _mean_rate(per_kg, 6),
                "urine_output_12h_ml_kg_h": _mean_rate(per_kg, 12),
                "urine_output_24h_ml_kg_h": _mean_rate(per_kg, 24),
                "urine_output_24h_ml": (
                    math.fsum(charted) if len(charted) == URINE_HOURS else None
                ),
                "kdigo_urine_output_stage": (
                    None if per_kg is None else kdigo_urine_output_stage(per_kg)
                ),
            }
            self._urine_features_key = key
        return self._urine_features

    def _stress_test(self, at_s: float, facts: PatientFacts) -> tuple[float | None, int | None]:
        """(2-h urine, non-response) of the latest dose, cached until an input changes."""
        doses = self.furosemide_doses.times
        index = bisect.bisect_right(doses, at_s)
        phase = 0
        if index:
            elapsed = at_s - doses[index - 1]
            phase = 0 if elapsed > FURO_LOOKBACK_S else (2 if elapsed >= FST_WINDOW_S else 1)
        key = (self._urine_version, self._dose_version, index, phase)
        if key != self._stress_key:
            test = self.furosemide_stress_test(at_s, facts)
            self._stress = (None, None) if test is None else (test.urine_2h_ml, test.nonresponse)
            self._stress_key = key
        return self._stress

    def features(self, at_s: float, facts: PatientFacts) -> Features:
        flow_at = self.blood_flow_last_positive_s
        rrt_started = flow_at is not None and at_s - flow_at <= RRT_LOOKBACK_S
        # The creatinine stage is the creatinine criteria only (creatinine on CRRT says
        # little); "RRT started" makes stage 3 in the overall ``kdigo_stage``.
        baseline, creatinine_stage = self._creatinine(at_s, False)
        urine = self._urine_output(at_s, facts.weight_kg)
        urine_24h = urine["urine_output_24h_ml"]
        urine_stage = urine["kdigo_urine_output_stage"]
        stress_urine, stress_nonresponse = self._stress_test(at_s, facts)
        liberation: int | None = None
        if facts.on_crrt and urine_24h is not None:
            diuretic = self.furosemide_given(at_s)
            limit = LIBERATION_URINE_DIURETIC_ML if diuretic else LIBERATION_URINE_ML
            liberation = int(urine_24h > limit)
        return {
            "creatinine_mg_dl": self.creatinine.latest(at_s, CREATININE_FRESH_S),
            "creatinine_baseline_mg_dl": baseline,
            "kdigo_creatinine_stage": creatinine_stage,
            **urine,
            "kdigo_stage": 3
            if rrt_started
            else kdigo_stage(creatinine_stage, None if urine_stage is None else int(urine_stage)),
            "furosemide_stress_urine_2h_ml": stress_urine,
            "furosemide_stress_nonresponse": stress_nonresponse,
            "crrt_liberation_signal": liberation,
        }

    # ---- state ---------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "creatinine": self.creatinine.to_state(),
            "urine": self.urine.to_state(),
            "furosemide_doses": self.furosemide_doses.to_state(),
            "furosemide_infusion": self.furosemide_infusion.to_state(),
            "blood_flow_last_positive_s": self.blood_flow_last_positive_s,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        group = cls()
        group.creatinine = SparseSeries.from_state(state["creatinine"])
        group.urine = HourlyVolumes.from_state(state["urine"])
        group.furosemide_doses = SparseSeries.from_state(state["furosemide_doses"])
        group.furosemide_infusion = StepSeries.from_state(state["furosemide_infusion"])
        flow_at = state["blood_flow_last_positive_s"]
        group.blood_flow_last_positive_s = None if flow_at is None else float(flow_at)
        return group


def _mean_rate(per_kg: list[float | None] | None, hours: int) -> float | None:
    """Mean mL/kg/h over the last ``hours`` complete hours, None unless all are known."""
    if per_kg is None:
        return None
    window = per_kg[-hours:]
    if any(v is None for v in window):
        return None
    return math.fsum(v for v in window if v is not None) / hours
