"""SOFA inputs of the other organs: respiratory, coagulation, liver, CNS, cardiovascular drugs.

Source: CLINICAL.md "Organ dysfunction: SOFA subscores" (Vincent 1996, Intensive
Care Med 22:707): PaO2/FiO2, platelets, bilirubin, GCS, MAP and catecholamine
doses in ug/kg/min "given for at least 1 hour"; the SpO2/FiO2 surrogate where no
blood gas (Rice 2007, Chest 132:410), valid only while SpO2 <= 97 %.
"""

from __future__ import annotations

import bisect
from typing import Any, ClassVar, Self

from schemas.codes import Quantity
from schemas.context import Drug, Gcs, Infusion, PatientContext
from streams.features.base import Features, PatientFacts
from streams.features.windows import DAY_S, HOUR_S, SparseSeries
from streams.rolling import RollingMedian

MEDIAN_WIDTH_S = 60.0
"""SpO2 and respiratory rate: median of the 60 s ending at the latest sample,
unknown once that sample is > 60 s old."""
FIO2_MAX_AGE_S = DAY_S
PAO2_MAX_AGE_S = 6 * HOUR_S
PF_FIO2_MAX_AGE_S = 6 * HOUR_S
"""The FiO2 paired with a PaO2 is the one in force at the PaO2's time, <= 6 h older."""
SF_MAX_SPO2_PCT = 97.0
LAB_MAX_AGE_S = 48 * HOUR_S
GCS_MAX_AGE_S = 12 * HOUR_S
TEMPERATURE_MAX_AGE_S = HOUR_S
SOFA_DRUG_MIN_DURATION_S = HOUR_S
INFUSION_KEEP_S = 2 * HOUR_S
"""Infusion events kept: those of the last 2 h before the newest, plus the one in force then."""

CATECHOLAMINES = (Drug.NOREPINEPHRINE, Drug.EPINEPHRINE, Drug.DOPAMINE, Drug.DOBUTAMINE)
VASOPRESSORS = (
    Drug.NOREPINEPHRINE,
    Drug.EPINEPHRINE,
    Drug.DOPAMINE,
    Drug.VASOPRESSIN,
    Drug.PHENYLEPHRINE,
)
"""Dobutamine is an inotrope, not a vasopressor: it does not set ``vasopressor_on``."""
_INFUSED = frozenset((*CATECHOLAMINES, *VASOPRESSORS))

_LABS = {
    Quantity.PAO2: PAO2_MAX_AGE_S,
    Quantity.PLATELETS: LAB_MAX_AGE_S,
    Quantity.BILIRUBIN_TOTAL: LAB_MAX_AGE_S,
}


def fio2_pct(value: float) -> float | None:
    """FiO2 in % from a charted value: <= 1.0 is a fraction (x 100); impossible values -> None.

    Charting systems send either 0.21-1.0 or 21-100; a value outside both (below
    room air or above 100 %) is refused rather than guessed.

    >>> fio2_pct(0.4), fio2_pct(40.0), fio2_pct(1.0), fio2_pct(5.0)
    (40.0, 40.0, 100.0, None)
    """
    if 0.21 <= value <= 1.0:
        return value * 100.0
    if 21.0 <= value <= 100.0:
        return value
    return None


def to_ug_kg_min(rate: float, unit: str, weight_kg: float | None) -> float | None:
    """A catecholamine rate in ug/kg/min; mg/h needs the weight; U/min cannot be converted.

    >>> to_ug_kg_min(0.1, "ug/kg/min", None), to_ug_kg_min(0.6, "mg/h", 100.0)
    (0.1, 0.1)
    >>> to_ug_kg_min(0.6, "mg/h", None) is None, to_ug_kg_min(0.0, "mg/h", None)
    (True, 0.0)
    """
    if rate == 0:
        return 0.0
    if unit == "ug/kg/min":
        return rate
    if unit == "mg/h" and weight_kg is not None and weight_kg > 0:
        return rate * 1000.0 / 60.0 / weight_kg
    return None


class InfusionRates:
    """Step-held rates of one infusion (rate, unit), placed by event time, trimmed.

    Unlike ``SparseSeries`` the trim keeps the event in force at the cut, so a
    drip set once 10 h ago still runs. Before its first event a drug is not
    running (rate 0).

    >>> r = InfusionRates()
    >>> r.insert(0.0, 0.05, "ug/kg/min"); r.insert(1800.0, 0.1, "ug/kg/min")
    >>> r.segments(1200.0, 3600.0)
    [(0.05, 'ug/kg/min'), (0.1, 'ug/kg/min')]
    >>> r.in_force(-1.0)
    (0.0, 'ug/kg/min')
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self.rates: list[float] = []
        self.units: list[str] = []

    def insert(self, t: float, rate: float, unit: str) -> None:
        i = bisect.bisect_left(self.times, t)
        if i < len(self.times) and self.times[i] == t:
            self.rates[i], self.units[i] = rate, unit
        else:
            self.times.insert(i, t)
            self.rates.insert(i, rate)
            self.units.insert(i, unit)
        in_force_at_cut = bisect.bisect_right(self.times, self.times[-1] - INFUSION_KEEP_S) - 1
        if in_force_at_cut > 0:
            del self.times[:in_force_at_cut]
            del self.rates[:in_force_at_cut]
            del self.units[:in_force_at_cut]

    def in_force(self, at_s: float) -> tuple[float, str]:
        i = bisect.bisect_right(self.times, at_s)
        return (self.rates[i - 1], self.units[i - 1]) if i else (0.0, "ug/kg/min")

    def segments(self, start_s: float, end_s: float) -> list[tuple[float, str]]:
        """Every (rate, unit) in force at some time of ``[start_s, end_s]``, oldest first."""
        lo = bisect.bisect_right(self.times, start_s)
        hi = bisect.bisect_right(self.times, end_s)
        rest = list(zip(self.rates[lo:hi], self.units[lo:hi], strict=True))
        return [self.in_force(start_s), *rest]

    def to_state(self) -> list[list[Any]]:
        return [list(row) for row in zip(self.times, self.rates, self.units, strict=True)]

    @classmethod
    def from_state(cls, state: list[list[Any]]) -> InfusionRates:
        rates = cls()
        for t, rate, unit in state:
            rates.times.append(float(t))
            rates.rates.append(float(rate))
            rates.units.append(str(unit))
        return rates


class _LatestMedian:
    """A frequent vital's 1-min median as of its latest sample, with staleness."""

    def __init__(self) -> None:
        self.median = RollingMedian(MEDIAN_WIDTH_S)
        self.last_t: float | None = None

    def add(self, t: float, value: float) -> None:
        self.median.update(t, value)
        self.last_t = t

    def value(self, at_s: float) -> float | None:
        if self.last_t is None or at_s - self.last_t > MEDIAN_WIDTH_S:
            return None
        return self.median.get()

    def to_state(self) -> dict[str, Any]:
        return {"m": self.median.to_state(), "t": self.last_t}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _LatestMedian:
        latest = cls()
        latest.median = RollingMedian.from_state(state["m"])
        latest.last_t = state["t"]
        return latest


class OrganFeatures:
    """SOFA inputs for respiratory, coagulation, liver, CNS and cardiovascular drugs.

    - ``spo2_pct``, ``resp_rate_per_min``: 1-min medians (None after 60 s silence).
    - ``fio2_pct``: latest FiO2 (labs, within 24 h) in %; a value <= 1.0 is a
      fraction and converted, impossible values are dropped (:func:`fio2_pct`).
    - ``pao2_mmhg``: latest PaO2 within 6 h. ``pf_ratio_mmhg`` = PaO2 / (FiO2/100)
      with the FiO2 in force at the PaO2's time (at most 6 h older than it).
    - ``sf_ratio`` = SpO2 / (FiO2/100) with the current 1-min SpO2 and
      ``fio2_pct``, only while SpO2 <= 97 % (Rice 2007).
    - ``platelets_10e3_ul``, ``bilirubin_mg_dl``: latest within 48 h;
      ``gcs_total``: latest charted within 12 h; ``temperature_cel``: within 1 h.
    - Catecholamines (ug/kg/min) from ``Infusion`` events, step-held (0 after a
      rate-0 event; 0 when never charted: no drip charted = none running). SOFA
      counts a dose "given for at least 1 hour", so the feature is the *lowest*
      rate held over the last hour: 0 until a drip has run 1 h, and after a
      change the lower of old and new for the next hour. mg/h is converted with
      ``facts.weight_kg`` (None without weight); U/min is not convertible (None).
    - ``vasopressor_on``: 1 when norepinephrine, epinephrine, dopamine,
      vasopressin or phenylephrine currently runs at a rate > 0 (no 1-h minimum).

    References: CLINICAL.md "Organ dysfunction: SOFA subscores"; Vincent 1996;
    Rice 2007.

    >>> from datetime import UTC, datetime
    >>> from schemas.common import SourceInfo
    >>> def drip(t, rate):
    ...     at = datetime.fromtimestamp(t, UTC)
    ...     return Infusion(patient_id="p1", observed_at=at, received_at=at,
    ...                     source=SourceInfo(adapter="context"), drug="norepinephrine",
    ...                     rate=rate, rate_unit="ug/kg/min")
    >>> o = OrganFeatures()
    >>> o.observe(Quantity.FIO2, 0.0, 0.5); o.observe(Quantity.PAO2, 60.0, 90.0)
    >>> for s in range(0, 61):
    ...     o.observe(Quantity.SPO2, float(s), 94.0)
    >>> o.observe_context(drip(0.0, 0.08), 0.0); o.observe_context(drip(1800.0, 0.12), 1800.0)
    >>> f = o.features(60.0, PatientFacts())
    >>> f["fio2_pct"], f["pf_ratio_mmhg"], f["sf_ratio"]
    (50.0, 180.0, 188.0)
    >>> f["norepinephrine_ug_kg_min"], f["vasopressor_on"]  # running < 1 h
    (0.0, 1.0)
    >>> o.features(3700.0, PatientFacts())["norepinephrine_ug_kg_min"]  # lowest of the hour
    0.08
    """

    quantities: ClassVar[frozenset[Quantity]] = frozenset(
        {
            Quantity.BILIRUBIN_TOTAL,
            Quantity.FIO2,
            Quantity.PAO2,
            Quantity.PLATELETS,
            Quantity.RESP_RATE,
            Quantity.SPO2,
            Quantity.TEMPERATURE,
        }
    )
    """The measurements this group reads (the caller routes only these to it)."""

    def __init__(self) -> None:
        self.spo2 = _LatestMedian()
        self.resp_rate = _LatestMedian()
        self.fio2 = SparseSeries(horizon_s=FIO2_MAX_AGE_S + PF_FIO2_MAX_AGE_S)
        self.labs: dict[Quantity, SparseSeries] = {
            q: SparseSeries(2 * age) for q, age in _LABS.items()
        }
        self.gcs = SparseSeries(horizon_s=2 * GCS_MAX_AGE_S)
        self.temperature: tuple[float, float] | None = None
        self.infusions: dict[Drug, InfusionRates] = {}

    def observe(self, quantity: Quantity, at_s: float, value: float) -> None:
        if quantity is Quantity.SPO2:
            self.spo2.add(at_s, value)
        elif quantity is Quantity.RESP_RATE:
            self.resp_rate.add(at_s, value)
        elif quantity is Quantity.TEMPERATURE:
            if self.temperature is None or at_s >= self.temperature[0]:
                self.temperature = (at_s, value)
        elif quantity is Quantity.FIO2:
            pct = fio2_pct(value)
            if pct is not None:
                self.fio2.insert(at_s, pct)
        elif quantity in self.labs:
            self.labs[quantity].insert(at_s, value)

    def observe_context(self, event: PatientContext, at_s: float) -> None:
        if isinstance(event, Gcs):
            self.gcs.insert(at_s, float(event.total))
        elif isinstance(event, Infusion) and event.drug in _INFUSED:
            rates = self.infusions.setdefault(event.drug, InfusionRates())
            rates.insert(at_s, event.rate, event.rate_unit)

    def _sofa_dose(self, drug: Drug, at_s: float, weight_kg: float | None) -> float | None:
        """The lowest rate (ug/kg/min) held over the hour before ``at_s`` (see class doc)."""
        rates = self.infusions.get(drug)
        if rates is None:
            return 0.0
        doses = [
            to_ug_kg_min(rate, unit, weight_kg)
            for rate, unit in rates.segments(at_s - SOFA_DRUG_MIN_DURATION_S, at_s)
        ]
        if any(d == 0.0 for d in doses):
            return 0.0
        known = [d for d in doses if d is not None]
        return min(known) if len(known) == len(doses) else None

    def features(self, at_s: float, facts: PatientFacts) -> Features:
        spo2 = self.spo2.value(at_s)
        fio2 = self.fio2.latest(at_s, FIO2_MAX_AGE_S)
        pao2_at = self.labs[Quantity.PAO2].as_of(at_s)
        pf_ratio: float | None = None
        pao2: float | None = None
        if pao2_at is not None and at_s - pao2_at[0] <= PAO2_MAX_AGE_S:
            pao2 = pao2_at[1]
            paired = self.fio2.latest(pao2_at[0], PF_FIO2_MAX_AGE_S)
            pf_ratio = pao2 / (paired / 100.0) if paired is not None else None
        temperature = self.temperature
        doses = {drug: self._sofa_dose(drug, at_s, facts.weight_kg) for drug in CATECHOLAMINES}
        vasopressor_on = any(
            self.infusions[d].in_force(at_s)[0] > 0 for d in VASOPRESSORS if d in self.infusions
        )
        return {
            "spo2_pct": spo2,
            "resp_rate_per_min": self.resp_rate.value(at_s),
            "fio2_pct": fio2,
            "pao2_mmhg": pao2,
            "pf_ratio_mmhg": pf_ratio,
            "sf_ratio": (
                spo2 / (fio2 / 100.0)
                if spo2 is not None and fio2 is not None and spo2 <= SF_MAX_SPO2_PCT
                else None
            ),
            "platelets_10e3_ul": self.labs[Quantity.PLATELETS].latest(at_s, LAB_MAX_AGE_S),
            "bilirubin_mg_dl": self.labs[Quantity.BILIRUBIN_TOTAL].latest(at_s, LAB_MAX_AGE_S),
            "gcs_total": self.gcs.latest(at_s, GCS_MAX_AGE_S),
            "temperature_cel": (
                temperature[1]
                if temperature is not None and 0 <= at_s - temperature[0] <= TEMPERATURE_MAX_AGE_S
                else None
            ),
            "norepinephrine_ug_kg_min": doses[Drug.NOREPINEPHRINE],
            "epinephrine_ug_kg_min": doses[Drug.EPINEPHRINE],
            "dopamine_ug_kg_min": doses[Drug.DOPAMINE],
            "dobutamine_ug_kg_min": doses[Drug.DOBUTAMINE],
            "vasopressor_on": 1.0 if vasopressor_on else 0.0,
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "spo2": self.spo2.to_state(),
            "rr": self.resp_rate.to_state(),
            "fio2": self.fio2.to_state(),
            "labs": {q.value: s.to_state() for q, s in self.labs.items()},
            "gcs": self.gcs.to_state(),
            "temp": list(self.temperature) if self.temperature is not None else None,
            "inf": {d.value: r.to_state() for d, r in self.infusions.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        organs = cls()
        organs.spo2 = _LatestMedian.from_state(state["spo2"])
        organs.resp_rate = _LatestMedian.from_state(state["rr"])
        organs.fio2 = SparseSeries.from_state(state["fio2"])
        organs.labs = {Quantity(q): SparseSeries.from_state(s) for q, s in state["labs"].items()}
        organs.gcs = SparseSeries.from_state(state["gcs"])
        temp = state["temp"]
        organs.temperature = (float(temp[0]), float(temp[1])) if temp is not None else None
        organs.infusions = {Drug(d): InfusionRates.from_state(r) for d, r in state["inf"].items()}
        return organs
