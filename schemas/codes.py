"""One table of codes: every MDC or LOINC code Vigil understands, mapped to one canonical field.

Vendors use several MDC terms for the same quantity (CLINICAL.md, "Codes"); each
maps here to one :class:`Quantity` with one canonical UCUM unit. A code that is not
in this table is kept on its message with ``quantity=None`` (flagged unknown),
never dropped.

>>> lookup(CodeSystem.MDC, "150039")
<Quantity.ABP_MEAN: 'abp_mean'>
>>> lookup(CodeSystem.MDC, "MDC_PRESS_BLD_ART_ABP_MEAN")
<Quantity.ABP_MEAN: 'abp_mean'>
>>> lookup(CodeSystem.LOINC, "8867-4")
<Quantity.HEART_RATE: 'heart_rate'>
>>> lookup(CodeSystem.MDC, "999999") is None
True
>>> QUANTITIES[Quantity.TEMPERATURE].ucum_unit
'Cel'

Sources: IEEE 11073-10101 nomenclature (MDC term codes as used in IHE PCD-01),
LOINC (loinc.org); the selection follows ../shared/CLINICAL.md "Codes".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class CodeSystem(StrEnum):
    """Coding system of a measurement's code."""

    MDC = "MDC"  # IEEE 11073-10101 term code (numeric) or reference id
    LOINC = "LOINC"
    VIGIL = "VIGIL"  # private codes for quantities with no public code (rSO2, CRRT)
    LOCAL = "LOCAL"  # a sender's own code that Vigil does not know


class Category(StrEnum):
    """Which raw topic a quantity belongs on."""

    VITALS = "vitals"
    NIRS = "nirs"
    CRRT = "crrt"
    LABS = "labs"


class Quantity(StrEnum):
    """Canonical measured quantities, named in clinical words."""

    HEART_RATE = "heart_rate"
    PULSE_RATE = "pulse_rate"
    SPO2 = "spo2"
    PERFUSION_INDEX = "perfusion_index"
    NBP_SYS = "nbp_sys"
    NBP_DIA = "nbp_dia"
    NBP_MEAN = "nbp_mean"
    ABP_SYS = "abp_sys"
    ABP_DIA = "abp_dia"
    ABP_MEAN = "abp_mean"
    RESP_RATE = "resp_rate"
    TEMPERATURE = "temperature"
    CVP = "cvp"
    CVP_MEAN = "cvp_mean"
    ETCO2 = "etco2"
    RSO2_LEFT = "rso2_left"
    RSO2_RIGHT = "rso2_right"
    RSO2_BASELINE_LEFT = "rso2_baseline_left"
    RSO2_BASELINE_RIGHT = "rso2_baseline_right"
    CRRT_MODE = "crrt_mode"
    CRRT_BLOOD_FLOW = "crrt_blood_flow"
    CRRT_DIALYSATE_RATE = "crrt_dialysate_rate"
    CRRT_REPLACEMENT_RATE = "crrt_replacement_rate"
    CRRT_EFFLUENT_RATE = "crrt_effluent_rate"
    CRRT_NET_UF_RATE = "crrt_net_uf_rate"
    CRRT_ACCESS_PRESSURE = "crrt_access_pressure"
    CRRT_RETURN_PRESSURE = "crrt_return_pressure"
    CRRT_PREFILTER_PRESSURE = "crrt_prefilter_pressure"
    CRRT_EFFLUENT_PRESSURE = "crrt_effluent_pressure"
    CRRT_TMP = "crrt_tmp"
    CRRT_FILTER_PRESSURE_DROP = "crrt_filter_pressure_drop"
    CRRT_FLUID_REMOVED = "crrt_fluid_removed"
    CRRT_MACHINE_ALARM = "crrt_machine_alarm"
    LACTATE = "lactate"
    CREATININE = "creatinine"
    BILIRUBIN_TOTAL = "bilirubin_total"
    PLATELETS = "platelets"
    PAO2 = "pao2"
    FIO2 = "fio2"
    PACO2 = "paco2"
    SAO2 = "sao2"
    PH = "ph"
    BICARBONATE = "bicarbonate"
    BASE_EXCESS = "base_excess"
    UREA_NITROGEN = "urea_nitrogen"
    BILIRUBIN_DIRECT = "bilirubin_direct"
    AST = "ast"
    ALKALINE_PHOSPHATASE = "alkaline_phosphatase"
    CALCIUM = "calcium"
    CHLORIDE = "chloride"
    GLUCOSE = "glucose"
    MAGNESIUM = "magnesium"
    PHOSPHATE = "phosphate"
    POTASSIUM = "potassium"
    TROPONIN_I = "troponin_i"
    HEMATOCRIT = "hematocrit"
    HEMOGLOBIN = "hemoglobin"
    PTT = "ptt"
    WBC = "wbc"
    FIBRINOGEN = "fibrinogen"
    NSE = "nse"


@dataclass(frozen=True)
class QuantityInfo:
    """How one quantity is coded and in which unit it travels on its topic."""

    quantity: Quantity
    category: Category
    ucum_unit: str
    mdc: tuple[tuple[str, str], ...] = ()  # (term code, reference id), preferred first
    loinc: tuple[str, ...] = ()
    private_code: str | None = None
    numeric: bool = True

    @property
    def primary(self) -> tuple[CodeSystem, str, str | None]:
        """The code a Vigil adapter writes when it creates this quantity itself."""
        if self.mdc:
            return CodeSystem.MDC, self.mdc[0][0], self.mdc[0][1]
        if self.loinc:
            return CodeSystem.LOINC, self.loinc[0], None
        assert self.private_code is not None
        return CodeSystem.VIGIL, self.private_code, None


def _q(
    quantity: Quantity,
    category: Category,
    unit: str,
    *,
    mdc: tuple[tuple[str, str], ...] = (),
    loinc: tuple[str, ...] = (),
    private: str | None = None,
    numeric: bool = True,
) -> QuantityInfo:
    return QuantityInfo(quantity, category, unit, mdc, loinc, private, numeric)


_V, _N, _C, _L = Category.VITALS, Category.NIRS, Category.CRRT, Category.LABS
_MMHG, _PCT, _PER_MIN, _ML_H = "mm[Hg]", "%", "/min", "mL/h"

_TABLE = (
    _q(
        Quantity.HEART_RATE,
        _V,
        _PER_MIN,
        mdc=(("147842", "MDC_ECG_HEART_RATE"), ("147842", "MDC_ECG_CARD_BEAT_RATE")),
        loinc=("8867-4",),
    ),
    _q(
        Quantity.PULSE_RATE,
        _V,
        _PER_MIN,
        mdc=(
            ("149530", "MDC_PULS_OXIM_PULS_RATE"),
            ("149546", "MDC_PULS_RATE_NON_INV"),
            ("149522", "MDC_BLD_PULS_RATE_INV"),  # from the arterial line (GE, Comen)
        ),
    ),
    _q(
        Quantity.SPO2,
        _V,
        _PCT,
        mdc=(("150456", "MDC_PULS_OXIM_SAT_O2"),),
        loinc=("59408-5",),
    ),
    _q(Quantity.PERFUSION_INDEX, _V, _PCT, mdc=(("150448", "MDC_PULS_OXIM_PERF_REL"),)),
    _q(
        Quantity.NBP_SYS,
        _V,
        _MMHG,
        mdc=(("150021", "MDC_PRESS_BLD_NONINV_SYS"), ("150301", "MDC_PRESS_CUFF_SYS")),
        loinc=("8480-6",),
    ),
    _q(
        Quantity.NBP_DIA,
        _V,
        _MMHG,
        mdc=(("150022", "MDC_PRESS_BLD_NONINV_DIA"), ("150302", "MDC_PRESS_CUFF_DIA")),
        loinc=("8462-4",),
    ),
    _q(
        Quantity.NBP_MEAN,
        _V,
        _MMHG,
        mdc=(("150023", "MDC_PRESS_BLD_NONINV_MEAN"), ("150303", "MDC_PRESS_CUFF_MEAN")),
        loinc=("8478-0",),
    ),
    _q(
        Quantity.ABP_SYS,
        _V,
        _MMHG,
        mdc=(("150033", "MDC_PRESS_BLD_ART_SYS"), ("150037", "MDC_PRESS_BLD_ART_ABP_SYS")),
        loinc=("76215-3",),
    ),
    _q(
        Quantity.ABP_DIA,
        _V,
        _MMHG,
        mdc=(("150034", "MDC_PRESS_BLD_ART_DIA"), ("150038", "MDC_PRESS_BLD_ART_ABP_DIA")),
        loinc=("76213-8",),
    ),
    _q(
        Quantity.ABP_MEAN,
        _V,
        _MMHG,
        mdc=(("150035", "MDC_PRESS_BLD_ART_MEAN"), ("150039", "MDC_PRESS_BLD_ART_ABP_MEAN")),
        loinc=("76214-6",),
    ),
    _q(Quantity.RESP_RATE, _V, _PER_MIN, mdc=(("151562", "MDC_RESP_RATE"),), loinc=("9279-1",)),
    _q(
        Quantity.TEMPERATURE,
        _V,
        "Cel",
        mdc=(("150344", "MDC_TEMP"), ("188496", "MDC_TEMP_AXIL")),
        loinc=("8310-5",),
    ),
    _q(Quantity.CVP, _V, _MMHG, mdc=(("150084", "MDC_PRESS_BLD_VEN_CENT"),), loinc=("60985-9",)),
    _q(Quantity.CVP_MEAN, _V, _MMHG, mdc=(("150087", "MDC_PRESS_BLD_VEN_CENT_MEAN"),)),
    _q(Quantity.ETCO2, _V, _MMHG, mdc=(("151708", "MDC_AWAY_CO2_ET"),), loinc=("19889-5",)),
    # rSO2 has no public MDC code (CLINICAL.md): private codes, same table.
    _q(Quantity.RSO2_LEFT, _N, _PCT, private="VIGIL-RSO2-L"),
    _q(Quantity.RSO2_RIGHT, _N, _PCT, private="VIGIL-RSO2-R"),
    _q(Quantity.RSO2_BASELINE_LEFT, _N, _PCT, private="VIGIL-RSO2-BASE-L"),
    _q(Quantity.RSO2_BASELINE_RIGHT, _N, _PCT, private="VIGIL-RSO2-BASE-R"),
    # CRRT machine status: no public codes either.
    _q(Quantity.CRRT_MODE, _C, "1", private="VIGIL-CRRT-MODE", numeric=False),
    _q(Quantity.CRRT_BLOOD_FLOW, _C, "mL/min", private="VIGIL-CRRT-QB"),
    _q(Quantity.CRRT_DIALYSATE_RATE, _C, _ML_H, private="VIGIL-CRRT-QD"),
    _q(Quantity.CRRT_REPLACEMENT_RATE, _C, _ML_H, private="VIGIL-CRRT-QR"),
    _q(Quantity.CRRT_EFFLUENT_RATE, _C, _ML_H, private="VIGIL-CRRT-QEFF"),
    _q(Quantity.CRRT_NET_UF_RATE, _C, _ML_H, private="VIGIL-CRRT-NETUF"),
    _q(Quantity.CRRT_ACCESS_PRESSURE, _C, _MMHG, private="VIGIL-CRRT-PACC"),
    _q(Quantity.CRRT_RETURN_PRESSURE, _C, _MMHG, private="VIGIL-CRRT-PRET"),
    _q(Quantity.CRRT_PREFILTER_PRESSURE, _C, _MMHG, private="VIGIL-CRRT-PPRE"),
    _q(Quantity.CRRT_EFFLUENT_PRESSURE, _C, _MMHG, private="VIGIL-CRRT-PEFF"),
    _q(Quantity.CRRT_TMP, _C, _MMHG, private="VIGIL-CRRT-TMP"),
    _q(Quantity.CRRT_FILTER_PRESSURE_DROP, _C, _MMHG, private="VIGIL-CRRT-PDROP"),
    _q(Quantity.CRRT_FLUID_REMOVED, _C, "mL", private="VIGIL-CRRT-FLUIDREM"),
    _q(Quantity.CRRT_MACHINE_ALARM, _C, "1", private="VIGIL-CRRT-ALARM", numeric=False),
    _q(Quantity.LACTATE, _L, "mmol/L", loinc=("2524-7", "32693-4")),
    _q(Quantity.CREATININE, _L, "mg/dL", loinc=("2160-0",)),
    _q(Quantity.BILIRUBIN_TOTAL, _L, "mg/dL", loinc=("1975-2",)),
    _q(Quantity.PLATELETS, _L, "10*3/uL", loinc=("777-3",)),
    _q(Quantity.PAO2, _L, _MMHG, loinc=("2703-7",)),
    _q(Quantity.FIO2, _L, _PCT, loinc=("3150-0", "19996-8")),
    # The rest of the PhysioNet 2019 laboratory columns (risk-model inputs, issue 5).
    _q(Quantity.PACO2, _L, _MMHG, loinc=("2019-8",)),
    # Arterial oxygen saturation from a blood gas (lab), not pulse oximetry.
    _q(Quantity.SAO2, _L, _PCT, loinc=("2708-6",)),
    _q(Quantity.PH, _L, "[pH]", loinc=("2744-1", "11558-4")),
    _q(Quantity.BICARBONATE, _L, "mmol/L", loinc=("1963-8", "1959-6")),
    _q(Quantity.BASE_EXCESS, _L, "mmol/L", loinc=("11555-0",)),
    _q(Quantity.UREA_NITROGEN, _L, "mg/dL", loinc=("3094-0",)),
    _q(Quantity.BILIRUBIN_DIRECT, _L, "mg/dL", loinc=("1968-7",)),
    _q(Quantity.AST, _L, "U/L", loinc=("1920-8",)),
    _q(Quantity.ALKALINE_PHOSPHATASE, _L, "U/L", loinc=("6768-6",)),
    _q(Quantity.CALCIUM, _L, "mg/dL", loinc=("17861-6",)),
    _q(Quantity.CHLORIDE, _L, "mmol/L", loinc=("2075-0",)),
    _q(Quantity.GLUCOSE, _L, "mg/dL", loinc=("2345-7",)),
    _q(Quantity.MAGNESIUM, _L, "mg/dL", loinc=("19123-9",)),
    _q(Quantity.PHOSPHATE, _L, "mg/dL", loinc=("2777-1",)),
    _q(Quantity.POTASSIUM, _L, "mmol/L", loinc=("2823-3",)),
    _q(Quantity.TROPONIN_I, _L, "ng/mL", loinc=("10839-9",)),
    _q(Quantity.HEMATOCRIT, _L, _PCT, loinc=("4544-3",)),
    _q(Quantity.HEMOGLOBIN, _L, "g/dL", loinc=("718-7",)),
    _q(Quantity.PTT, _L, "s", loinc=("3173-2",)),
    _q(Quantity.WBC, _L, "10*3/uL", loinc=("6690-2",)),
    _q(Quantity.FIBRINOGEN, _L, "mg/dL", loinc=("3255-7",)),
    # Neuron-specific enolase (brain injury marker after cardiac arrest)
    _q(Quantity.NSE, _L, "ng/mL", loinc=("15060-4",)),
)

QUANTITIES: Mapping[Quantity, QuantityInfo] = MappingProxyType({i.quantity: i for i in _TABLE})


def _index() -> dict[tuple[CodeSystem, str], Quantity]:
    index: dict[tuple[CodeSystem, str], Quantity] = {}
    for info in _TABLE:
        for term_code, ref_id in info.mdc:
            index[(CodeSystem.MDC, term_code)] = info.quantity
            index[(CodeSystem.MDC, ref_id)] = info.quantity
        for loinc in info.loinc:
            index[(CodeSystem.LOINC, loinc)] = info.quantity
        if info.private_code:
            index[(CodeSystem.VIGIL, info.private_code)] = info.quantity
    return index


_BY_CODE: Mapping[tuple[CodeSystem, str], Quantity] = MappingProxyType(_index())


def lookup(system: CodeSystem, code: str) -> Quantity | None:
    """The canonical quantity of a code, or None when Vigil does not know the code."""
    return _BY_CODE.get((system, code.strip()))
