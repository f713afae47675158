"""The other laboratory values: blood gas, chemistry, blood count, liver, coagulation.

Labs no clinical rule reads (the rules' labs - lactate, creatinine, platelets, total
bilirubin, PaO2, FiO2, NSE - live in their organ's group), kept so that the features
topic carries them for the risk models: the PhysioNet/CinC 2019 challenge data have
these columns, and its entries used them (Reyna et al., Crit Care Med 2020;48:210;
CLINICAL.md "Utility score").

Per lab, the latest result by specimen time, while it is fresh enough to describe
the patient now; older is unknown (None), never 0:

- blood gas (pH, PaCO2, base excess, SaO2): 6 h, as PaO2 (``organs.PAO2_MAX_AGE_S``):
  a gas describes a moment of a changing ventilation;
- glucose, potassium, bicarbonate: 24 h (measured several times a day in the ICU);
- the rest (urea nitrogen, electrolytes, blood count, liver tests, coagulation,
  troponin): 48 h, as the SOFA labs (``organs.LAB_MAX_AGE_S``): daily panels.

The staleness limits are common practice, not a checked primary source.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Self

from schemas.codes import Quantity
from schemas.context import PatientContext
from streams.features.base import Features, PatientFacts
from streams.features.windows import HOUR_S

BLOOD_GAS_MAX_AGE_S = 6 * HOUR_S
FREQUENT_LAB_MAX_AGE_S = 24 * HOUR_S
DAILY_LAB_MAX_AGE_S = 48 * HOUR_S

LAB_FEATURES: Mapping[Quantity, tuple[str, float]] = MappingProxyType(
    {
        Quantity.PH: ("ph", BLOOD_GAS_MAX_AGE_S),
        Quantity.PACO2: ("paco2_mmhg", BLOOD_GAS_MAX_AGE_S),
        Quantity.BASE_EXCESS: ("base_excess_mmol_l", BLOOD_GAS_MAX_AGE_S),
        Quantity.SAO2: ("sao2_pct", BLOOD_GAS_MAX_AGE_S),
        Quantity.BICARBONATE: ("bicarbonate_mmol_l", FREQUENT_LAB_MAX_AGE_S),
        Quantity.GLUCOSE: ("glucose_mg_dl", FREQUENT_LAB_MAX_AGE_S),
        Quantity.POTASSIUM: ("potassium_mmol_l", FREQUENT_LAB_MAX_AGE_S),
        Quantity.UREA_NITROGEN: ("bun_mg_dl", DAILY_LAB_MAX_AGE_S),
        Quantity.CHLORIDE: ("chloride_mmol_l", DAILY_LAB_MAX_AGE_S),
        Quantity.CALCIUM: ("calcium_mg_dl", DAILY_LAB_MAX_AGE_S),
        Quantity.MAGNESIUM: ("magnesium_mg_dl", DAILY_LAB_MAX_AGE_S),
        Quantity.PHOSPHATE: ("phosphate_mg_dl", DAILY_LAB_MAX_AGE_S),
        Quantity.WBC: ("wbc_10e3_ul", DAILY_LAB_MAX_AGE_S),
        Quantity.HEMOGLOBIN: ("hemoglobin_g_dl", DAILY_LAB_MAX_AGE_S),
        Quantity.HEMATOCRIT: ("hematocrit_pct", DAILY_LAB_MAX_AGE_S),
        Quantity.AST: ("ast_u_l", DAILY_LAB_MAX_AGE_S),
        Quantity.ALKALINE_PHOSPHATASE: ("alkaline_phosphatase_u_l", DAILY_LAB_MAX_AGE_S),
        Quantity.BILIRUBIN_DIRECT: ("bilirubin_direct_mg_dl", DAILY_LAB_MAX_AGE_S),
        Quantity.PTT: ("ptt_s", DAILY_LAB_MAX_AGE_S),
        Quantity.FIBRINOGEN: ("fibrinogen_mg_dl", DAILY_LAB_MAX_AGE_S),
        Quantity.TROPONIN_I: ("troponin_i_ng_ml", DAILY_LAB_MAX_AGE_S),
    }
)
"""Each lab read: (feature name, longest age at which its latest result is known)."""


class LabFeatures:
    """The latest result of each lab in :data:`LAB_FEATURES`, unknown once stale.

    State is one (specimen time, value) per lab: a result whose specimen is older
    than the one kept (a late report) does not replace it; one of the same time
    does (a corrected result). A result from after the time asked is not known yet.
    Every feature is read by ``features`` only; the worker computes this group on
    lab records and snapshots, never on the vitals path.

    >>> labs = LabFeatures()
    >>> labs.observe(Quantity.PH, 0.0, 7.31); labs.observe(Quantity.WBC, 0.0, 14.2)
    >>> labs.observe(Quantity.WBC, 3600.0, 15.0); labs.observe(Quantity.WBC, 1800.0, 9.9)  # late
    >>> f = labs.features(4 * 3600.0, PatientFacts())
    >>> f["ph"], f["wbc_10e3_ul"], f["glucose_mg_dl"]
    (7.31, 15.0, None)
    >>> f = labs.features(7 * 3600.0, PatientFacts())  # the gas is 7 h old: unknown
    >>> f["ph"], f["wbc_10e3_ul"]
    (None, 15.0)
    """

    quantities: ClassVar[frozenset[Quantity]] = frozenset(LAB_FEATURES)
    """The measurements this group reads (the caller routes only these to it)."""

    def __init__(self) -> None:
        self.latest: dict[Quantity, tuple[float, float]] = {}  # lab -> (specimen time, value)

    def observe(self, quantity: Quantity, at_s: float, value: float) -> None:
        if quantity not in LAB_FEATURES:
            return
        kept = self.latest.get(quantity)
        if kept is None or at_s >= kept[0]:
            self.latest[quantity] = (at_s, value)

    def observe_context(self, event: PatientContext, at_s: float) -> None:
        return None

    def features(self, at_s: float, facts: PatientFacts) -> Features:
        found: Features = {}
        for quantity, (name, max_age_s) in LAB_FEATURES.items():
            kept = self.latest.get(quantity)
            found[name] = (
                kept[1] if kept is not None and 0.0 <= at_s - kept[0] <= max_age_s else None
            )
        return found

    def to_state(self) -> dict[str, Any]:
        return {"latest": {q.value: [t, v] for q, (t, v) in self.latest.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        labs = cls()
        labs.latest = {Quantity(q): (float(t), float(v)) for q, (t, v) in state["latest"].items()}
        return labs
