"""Normalisation in one place: units to the canonical UCUM unit, and plausibility.

Every adapter (HL7, NIRS, CRRT, replay, simulator) builds its measurements with
:func:`normalise`, so a value travels in one unit on its topic whatever the sender
used, and an implausible value is *kept* and marked ``artefact`` rather than dropped.

Units are accepted as UCUM (``mm[Hg]``, ``/min``, ``%``, ``Cel``), as common
spellings (``mmHg``, ``bpm``, ``degF``) or as IEEE 11073-10101 MDC unit codes or
reference ids (``266016`` / ``MDC_DIM_MMHG``), which PCD-01 OBX-6 carries. MDC unit
codes are partition 4: 4 * 65536 + the NOM_DIM term code (e.g. 262144 + 3872 = mm Hg).

>>> to_canonical(Quantity.TEMPERATURE, 98.6, "[degF]")
37.0
>>> to_canonical(Quantity.ABP_MEAN, 8.0, "kPa")
60.005
>>> to_canonical(Quantity.CREATININE, 176.84, "umol/L")
2.0
>>> to_canonical(Quantity.HEART_RATE, 60, "264864")
60.0
>>> to_canonical(Quantity.HEART_RATE, 60, "mL")
Traceback (most recent call last):
...
schemas.units.UnitError: heart_rate cannot be given in 'mL' (canonical unit '/min')
>>> plausible(Quantity.SPO2, 130.0), plausible(Quantity.SPO2, 91.0)
(False, True)

Sources: UCUM (unitsofmeasure.org); IEEE 11073-10101 dimension codes (MDC_DIM_*,
as listed in CLINICAL.md "Codes"); molar masses for the lab conversions: creatinine
113.12 g/mol (1 mg/dL = 88.42 umol/L), bilirubin 584.66 g/mol (1 mg/dL = 17.1
umol/L), lactate 90.08 g/mol (1 mmol/L = 9.008 mg/dL); 1 kPa = 7.50062 mm Hg,
1 cm H2O = 0.73556 mm Hg. Plausibility bounds are physical or device limits, wide
on purpose: they catch artefacts (lead-off zeros, flushes, unit mix-ups), not
abnormal physiology.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from schemas.codes import QUANTITIES, CodeSystem, Quantity, lookup
from schemas.observations import Measurement


class UnitError(ValueError):
    """A value's unit is not one its quantity can be converted from."""


# Spellings (UCUM, common, MDC code, MDC reference id) of each canonical unit.
_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        # pressure
        "mm[Hg]": "mm[Hg]",
        "mmHg": "mm[Hg]",
        "mm Hg": "mm[Hg]",
        "266016": "mm[Hg]",
        "MDC_DIM_MMHG": "mm[Hg]",
        "kPa": "kPa",
        "265987": "kPa",
        "MDC_DIM_KILO_PASCAL": "kPa",
        "cm[H2O]": "cm[H2O]",
        "cmH2O": "cm[H2O]",
        "266048": "cm[H2O]",
        "MDC_DIM_CM_H2O": "cm[H2O]",
        # rates
        "/min": "/min",
        "1/min": "/min",
        "{beats}/min": "/min",
        "{beat}/min": "/min",
        "{breaths}/min": "/min",
        "{breath}/min": "/min",
        "breaths/min": "/min",
        "beats/min": "/min",
        "br/min": "/min",
        "bpm": "/min",
        "rpm": "/min",
        "264864": "/min",
        "MDC_DIM_BEAT_PER_MIN": "/min",
        "264928": "/min",
        "MDC_DIM_RESP_PER_MIN": "/min",
        "264896": "/min",
        "MDC_DIM_PULS_PER_MIN": "/min",
        "264672": "/min",
        "MDC_DIM_PER_MIN": "/min",
        # fractions
        "%": "%",
        "262688": "%",
        "MDC_DIM_PERCENT": "%",
        "1": "1",
        "{ratio}": "1",
        "262656": "1",
        "MDC_DIM_DIMLESS": "1",
        # temperature
        "Cel": "Cel",
        "degC": "Cel",
        "°C": "Cel",
        "C": "Cel",
        "268192": "Cel",
        "MDC_DIM_DEGC": "Cel",
        "[degF]": "[degF]",
        "degF": "[degF]",
        "°F": "[degF]",
        "F": "[degF]",
        "266560": "[degF]",
        "MDC_DIM_FAHR": "[degF]",
        # volumes and flows
        "mL": "mL",
        "ml": "mL",
        "263762": "mL",
        "MDC_DIM_MILLI_L": "mL",
        "L": "L",
        "263744": "L",
        "MDC_DIM_X_L": "L",
        "l": "L",
        "mL/h": "mL/h",
        "ml/h": "mL/h",
        "ml/hr": "mL/h",
        "mL/hr": "mL/h",
        "265266": "mL/h",
        "MDC_DIM_MILLI_L_PER_HR": "mL/h",
        "L/h": "L/h",
        "265248": "L/h",
        "MDC_DIM_X_L_PER_HR": "L/h",
        "mL/min": "mL/min",
        "ml/min": "mL/min",
        "265234": "mL/min",
        "MDC_DIM_MILLI_L_PER_MIN": "mL/min",
        # labs
        "mmol/L": "mmol/L",
        "mmol/l": "mmol/L",
        "266866": "mmol/L",
        "MDC_DIM_MILLI_MOLE_PER_L": "mmol/L",
        "mg/dL": "mg/dL",
        "mg/dl": "mg/dL",
        "264274": "mg/dL",
        "MDC_DIM_MILLI_G_PER_DL": "mg/dL",
        "umol/L": "umol/L",
        "umol/l": "umol/L",
        "µmol/L": "umol/L",
        "266867": "umol/L",
        "MDC_DIM_MICRO_MOLE_PER_L": "umol/L",
        "10*3/uL": "10*3/uL",
        "K/uL": "10*3/uL",
        "x10E3/uL": "10*3/uL",
        "10*9/L": "10*3/uL",
        "10^9/L": "10*3/uL",
        "G/L": "10*3/uL",
        "g/L": "g/L",
        "g/dL": "g/dL",
        "g/dl": "g/dL",
        "[pH]": "[pH]",
        "pH": "[pH]",
        "U/L": "U/L",
        "IU/L": "U/L",
        "ng/mL": "ng/mL",
        "ng/ml": "ng/mL",
        "ug/L": "ng/mL",
        "s": "s",
        "sec": "s",
        "mEq/L": "mEq/L",
        "meq/L": "mEq/L",
    }
)

_MMHG_PER_KPA = 7.50062
_MMHG_PER_CMH2O = 0.73556

# (canonical unit, given unit) -> conversion; quantity-specific ones below.
_CONVERSIONS: Mapping[tuple[str, str], Callable[[float], float]] = MappingProxyType(
    {
        ("mm[Hg]", "kPa"): lambda v: v * _MMHG_PER_KPA,
        ("mm[Hg]", "cm[H2O]"): lambda v: v * _MMHG_PER_CMH2O,
        ("Cel", "[degF]"): lambda v: (v - 32.0) * 5.0 / 9.0,
        ("%", "1"): lambda v: v * 100.0,
        ("mL", "L"): lambda v: v * 1000.0,
        ("mL/h", "L/h"): lambda v: v * 1000.0,
        ("mL/h", "mL/min"): lambda v: v * 60.0,
    }
)

_BY_QUANTITY: Mapping[tuple[Quantity, str], Callable[[float], float]] = MappingProxyType(
    {
        (Quantity.CREATININE, "umol/L"): lambda v: v / 88.42,
        (Quantity.BILIRUBIN_TOTAL, "umol/L"): lambda v: v / 17.1,
        (Quantity.LACTATE, "mg/dL"): lambda v: v / 9.008,
        (Quantity.UREA_NITROGEN, "mmol/L"): lambda v: v * 2.801,  # urea N 28.01 g/mol
        (Quantity.GLUCOSE, "mmol/L"): lambda v: v * 18.016,  # glucose 180.16 g/mol
        (Quantity.CALCIUM, "mmol/L"): lambda v: v * 4.008,  # calcium 40.08 g/mol
        (Quantity.MAGNESIUM, "mmol/L"): lambda v: v * 2.431,  # magnesium 24.31 g/mol
        (Quantity.PHOSPHATE, "mmol/L"): lambda v: v * 3.097,  # phosphorus 30.97 g/mol
        # monovalent ions: 1 mEq/L = 1 mmol/L; divalent Ca and Mg: 1 mEq/L = 0.5 mmol/L
        (Quantity.POTASSIUM, "mEq/L"): lambda v: v,
        (Quantity.CHLORIDE, "mEq/L"): lambda v: v,
        (Quantity.BICARBONATE, "mEq/L"): lambda v: v,
        (Quantity.CALCIUM, "mEq/L"): lambda v: v * 0.5 * 4.008,
        (Quantity.MAGNESIUM, "mEq/L"): lambda v: v * 0.5 * 2.431,
        (Quantity.BILIRUBIN_DIRECT, "umol/L"): lambda v: v / 17.1,
        (Quantity.HEMOGLOBIN, "g/L"): lambda v: v / 10.0,
        (Quantity.PACO2, "kPa"): lambda v: v * _MMHG_PER_KPA,
        (Quantity.PAO2, "kPa"): lambda v: v * _MMHG_PER_KPA,
    }
)

_CANONICAL_DIGITS = 4  # conversions round to this many decimals (no float noise on topics)


def _case_insensitive_aliases() -> Mapping[str, str]:
    """Aliases by lower case, leaving out spellings whose case matters (G/L vs g/L)."""
    targets: dict[str, set[str]] = {}
    for alias, target in _ALIASES.items():
        targets.setdefault(alias.lower(), set()).add(target)
    return MappingProxyType({k: next(iter(v)) for k, v in targets.items() if len(v) == 1})


_ALIASES_ANY_CASE = _case_insensitive_aliases()


def canonical_unit_spelling(unit: str) -> str | None:
    """The UCUM spelling of ``unit`` (alias, MDC code or reference id), if known.

    Exact spellings first; then any case, unless the case changes the meaning.

    >>> canonical_unit_spelling("MDC_DIM_MMHG"), canonical_unit_spelling("furlong")
    ('mm[Hg]', None)
    >>> [canonical_unit_spelling(u) for u in ("BPM", "MMHG", "G/L", "g/L")]
    ['/min', 'mm[Hg]', '10*3/uL', 'g/L']
    """
    text = unit.strip()
    return _ALIASES.get(text) or _ALIASES_ANY_CASE.get(text.lower())


def to_canonical(quantity: Quantity, value: float, unit: str) -> float:
    """``value`` (in ``unit``) in the quantity's canonical unit; :class:`UnitError` if not possible.

    An empty unit is taken as the canonical one (senders often omit it for scores).
    """
    canonical = QUANTITIES[quantity].ucum_unit
    given = canonical if not unit.strip() else canonical_unit_spelling(unit)
    if given == canonical:
        return float(value)
    if given is not None:
        convert = _BY_QUANTITY.get((quantity, given)) or _CONVERSIONS.get((canonical, given))
        if convert is not None:
            return round(convert(float(value)), _CANONICAL_DIGITS)
    raise UnitError(f"{quantity.value} cannot be given in {unit!r} (canonical unit {canonical!r})")


@dataclass(frozen=True)
class PlausibleRange:
    """Values outside [low, high] (canonical unit) cannot be physiology: artefact."""

    low: float
    high: float


PLAUSIBLE: Mapping[Quantity, PlausibleRange] = MappingProxyType(
    {
        Quantity.HEART_RATE: PlausibleRange(15, 300),
        Quantity.PULSE_RATE: PlausibleRange(15, 300),
        Quantity.SPO2: PlausibleRange(30, 100),
        Quantity.PERFUSION_INDEX: PlausibleRange(0, 30),
        Quantity.NBP_SYS: PlausibleRange(30, 300),
        Quantity.NBP_DIA: PlausibleRange(10, 250),
        Quantity.NBP_MEAN: PlausibleRange(15, 270),
        Quantity.ABP_SYS: PlausibleRange(30, 300),
        Quantity.ABP_DIA: PlausibleRange(10, 250),
        Quantity.ABP_MEAN: PlausibleRange(15, 270),
        Quantity.RESP_RATE: PlausibleRange(0, 90),
        Quantity.TEMPERATURE: PlausibleRange(25, 45),
        Quantity.CVP: PlausibleRange(-10, 50),
        Quantity.CVP_MEAN: PlausibleRange(-10, 50),
        Quantity.ETCO2: PlausibleRange(0, 150),
        # INVOS / FORE-SIGHT display range is 15-95 %
        Quantity.RSO2_LEFT: PlausibleRange(15, 95),
        Quantity.RSO2_RIGHT: PlausibleRange(15, 95),
        Quantity.RSO2_BASELINE_LEFT: PlausibleRange(15, 95),
        Quantity.RSO2_BASELINE_RIGHT: PlausibleRange(15, 95),
        Quantity.CRRT_BLOOD_FLOW: PlausibleRange(0, 600),
        Quantity.CRRT_DIALYSATE_RATE: PlausibleRange(0, 12000),
        Quantity.CRRT_REPLACEMENT_RATE: PlausibleRange(0, 12000),
        Quantity.CRRT_EFFLUENT_RATE: PlausibleRange(0, 15000),
        Quantity.CRRT_NET_UF_RATE: PlausibleRange(-2000, 2000),
        Quantity.CRRT_ACCESS_PRESSURE: PlausibleRange(-450, 300),
        Quantity.CRRT_RETURN_PRESSURE: PlausibleRange(-100, 450),
        Quantity.CRRT_PREFILTER_PRESSURE: PlausibleRange(-100, 500),
        Quantity.CRRT_EFFLUENT_PRESSURE: PlausibleRange(-400, 400),
        Quantity.CRRT_TMP: PlausibleRange(-100, 500),
        Quantity.CRRT_FILTER_PRESSURE_DROP: PlausibleRange(-100, 400),
        Quantity.CRRT_FLUID_REMOVED: PlausibleRange(-50000, 50000),
        Quantity.LACTATE: PlausibleRange(0, 35),
        Quantity.CREATININE: PlausibleRange(0.05, 30),
        Quantity.BILIRUBIN_TOTAL: PlausibleRange(0, 80),
        Quantity.PLATELETS: PlausibleRange(0, 3000),
        Quantity.PAO2: PlausibleRange(10, 800),
        Quantity.FIO2: PlausibleRange(21, 100),
        Quantity.PACO2: PlausibleRange(5, 200),
        Quantity.SAO2: PlausibleRange(30, 100),
        Quantity.PH: PlausibleRange(6.5, 8.0),
        Quantity.BICARBONATE: PlausibleRange(1, 70),
        Quantity.BASE_EXCESS: PlausibleRange(-40, 40),
        Quantity.UREA_NITROGEN: PlausibleRange(0, 300),
        Quantity.BILIRUBIN_DIRECT: PlausibleRange(0, 60),
        Quantity.AST: PlausibleRange(0, 30000),
        Quantity.ALKALINE_PHOSPHATASE: PlausibleRange(0, 10000),
        Quantity.CALCIUM: PlausibleRange(1, 25),
        Quantity.CHLORIDE: PlausibleRange(50, 160),
        Quantity.GLUCOSE: PlausibleRange(5, 2500),
        Quantity.MAGNESIUM: PlausibleRange(0.2, 15),
        Quantity.PHOSPHATE: PlausibleRange(0.1, 25),
        Quantity.POTASSIUM: PlausibleRange(0.5, 12),
        Quantity.TROPONIN_I: PlausibleRange(0, 1000),
        Quantity.HEMATOCRIT: PlausibleRange(5, 80),
        Quantity.HEMOGLOBIN: PlausibleRange(1, 25),
        Quantity.PTT: PlausibleRange(5, 250),
        Quantity.WBC: PlausibleRange(0, 500),
        Quantity.FIBRINOGEN: PlausibleRange(10, 2000),
        Quantity.NSE: PlausibleRange(0, 1000),
    }
)


def plausible(quantity: Quantity, value: float) -> bool:
    """Whether ``value`` (canonical unit) can be a real measurement of ``quantity``."""
    bounds = PLAUSIBLE.get(quantity)
    if not math.isfinite(value):
        return False
    return bounds is None or bounds.low <= value <= bounds.high


def normalise(
    code_system: CodeSystem,
    code: str,
    observed_at: datetime,
    *,
    value: float | None = None,
    value_text: str | None = None,
    unit: str = "",
    code_label: str | None = None,
    device_id: str | None = None,
    containment: str | None = None,
    artefact: bool = False,
    quantity: Quantity | None = None,
) -> Measurement:
    """One coded reading as a :class:`Measurement`: code mapped, unit converted, flagged.

    - The quantity comes from ``quantity`` or, failing that, the code table (code, then
      the reference id in ``code_label``). An unknown code is kept with
      ``quantity=None`` and the sender's unit.
    - A known code in a unit that cannot be converted is also kept as unknown
      (``quantity=None``, the sender's unit): never a wrong value under a canonical name.
    - A numeric value outside :data:`PLAUSIBLE` is kept with ``artefact=True``.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> m = normalise(CodeSystem.MDC, "150344", t, value=104.0, unit="[degF]")
    >>> (m.quantity.value, m.value, m.unit, m.artefact)
    ('temperature', 40.0, 'Cel', False)
    >>> normalise(CodeSystem.MDC, "150456", t, value=0.0, unit="%").artefact
    True
    >>> normalise(CodeSystem.MDC, "999999", t, value=3.0, unit="{x}").quantity is None
    True
    """
    if quantity is None:
        quantity = lookup(code_system, code)
        if quantity is None and code_label:
            quantity = lookup(code_system, code_label)
    canonical_unit = unit.strip()
    if quantity is not None:
        info = QUANTITIES[quantity]
        if value is not None:
            try:
                value = to_canonical(quantity, value, unit)
                canonical_unit = info.ucum_unit
                artefact = artefact or not plausible(quantity, value)
            except UnitError:
                quantity = None
        elif info.numeric:
            quantity = None  # a text value for a numeric quantity: kept, flagged unknown
        else:
            canonical_unit = info.ucum_unit
    else:
        canonical_unit = canonical_unit_spelling(unit) or unit.strip()
    return Measurement(
        quantity=quantity,
        code_system=code_system,
        code=code.strip(),
        code_label=code_label,
        value=value,
        value_text=value_text,
        unit=canonical_unit,
        observed_at=observed_at,
        device_id=device_id,
        containment=containment,
        artefact=artefact,
    )
