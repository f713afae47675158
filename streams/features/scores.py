"""Bedside scores: SOFA subscores, qSOFA and NEWS2, as pure functions.

No I/O and no clock: the caller passes the latest valid value of each input (or
``None`` when it is missing or stale). An unknown input makes its subscore
unknown (``None``), never 0, and a total is only given when no unknown input
could still change it. Thresholds follow /work/shared/CLINICAL.md, sections
"Organ dysfunction: SOFA subscores" and "Screening scores".

>>> s = sofa(platelets_10e3_ul=90.0, creatinine_mg_dl=2.4, gcs_total=15)
>>> s.known_organs, s.known_total, s.total
(3, 4, None)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

SOFA_ORGANS = ("respiratory", "coagulation", "liver", "cardiovascular", "cns", "renal")
NEWS2_PARAMETERS = (
    "resp_rate",
    "spo2",
    "air_or_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)


def _require_non_negative(name: str, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _require_gcs(gcs_total: int | None) -> None:
    if gcs_total is not None and not 3 <= gcs_total <= 15:
        raise ValueError(f"GCS total must be 3-15, got {gcs_total}")


# --- SOFA (Vincent 1996) --------------------------------------------------------


def sofa_respiratory(
    pf_ratio_mmhg: float | None,
    sf_ratio: float | None = None,
    respiratory_support: bool | None = None,
) -> int | None:
    """SOFA respiratory subscore from PaO2/FiO2, else the SpO2/FiO2 surrogate.

    P/F (mmHg): <400 -> 1, <300 -> 2, <200 with respiratory support -> 3,
    <100 with support -> 4. Without *known* support the score is capped at 2
    (a lower bound when support is unknown). With no P/F, the S/F ratio is used
    with bands 400 / 315 / 235 / 150: 315 and 235 are Rice 2007's S/F equivalents
    of P/F 300 and 200; 400 and 150 come from Rice's regression
    (S/F = 64 + 0.84 x P/F at P/F 400 and 100) and match the modified SOFA of
    Grissom 2010 *(unverified against outcomes: an approximation)*. S/F is only
    valid while SpO2 <= 97 % (flat dissociation curve above): the caller checks.

    References: CLINICAL.md "Organ dysfunction: SOFA subscores"; Vincent 1996;
    Rice 2007 S/F (Chest 132:410).

    >>> sofa_respiratory(180.0, respiratory_support=True)
    3
    >>> sofa_respiratory(180.0)  # support unknown: capped at 2
    2
    >>> sofa_respiratory(None, sf_ratio=230.0, respiratory_support=True)
    3
    >>> sofa_respiratory(None) is None
    True
    """
    if pf_ratio_mmhg is not None:
        _require_non_negative("pf_ratio_mmhg", pf_ratio_mmhg)
        ratio, bands = pf_ratio_mmhg, (400.0, 300.0, 200.0, 100.0)
    elif sf_ratio is not None:
        _require_non_negative("sf_ratio", sf_ratio)
        ratio, bands = sf_ratio, (400.0, 315.0, 235.0, 150.0)
    else:
        return None
    one, two, three, four = bands
    if ratio >= one:
        return 0
    if ratio >= two:
        return 1
    if ratio >= three or respiratory_support is not True:
        return 2
    return 3 if ratio >= four else 4


def sofa_coagulation(platelets_10e3_ul: float | None) -> int | None:
    """SOFA coagulation subscore: platelets x10^3/uL <150 -> 1, <100 -> 2, <50 -> 3, <20 -> 4.

    References: CLINICAL.md "Organ dysfunction: SOFA subscores"; Vincent 1996.

    >>> sofa_coagulation(95.0)
    2
    """
    if platelets_10e3_ul is None:
        return None
    _require_non_negative("platelets_10e3_ul", platelets_10e3_ul)
    for points, below in ((4, 20.0), (3, 50.0), (2, 100.0), (1, 150.0)):
        if platelets_10e3_ul < below:
            return points
    return 0


def sofa_liver(bilirubin_mg_dl: float | None) -> int | None:
    """SOFA liver subscore: bilirubin mg/dL 1.2-1.9 -> 1, 2.0-5.9 -> 2, 6.0-11.9 -> 3, >=12 -> 4.

    Bands are half-open, ``[1.2, 2.0)`` -> 1 and so on (1.95 scores 1).
    References: CLINICAL.md "Organ dysfunction: SOFA subscores"; Vincent 1996.

    >>> sofa_liver(2.0), sofa_liver(1.95), sofa_liver(0.8)
    (2, 1, 0)
    """
    if bilirubin_mg_dl is None:
        return None
    _require_non_negative("bilirubin_mg_dl", bilirubin_mg_dl)
    for points, at_least in ((4, 12.0), (3, 6.0), (2, 2.0), (1, 1.2)):
        if bilirubin_mg_dl >= at_least:
            return points
    return 0


def sofa_cns(gcs_total: int | None) -> int | None:
    """SOFA CNS subscore: GCS 13-14 -> 1, 10-12 -> 2, 6-9 -> 3, <6 -> 4.

    Raises ValueError outside 3-15. References: CLINICAL.md "Organ dysfunction:
    SOFA subscores"; Vincent 1996.

    >>> sofa_cns(14), sofa_cns(9), sofa_cns(15)
    (1, 3, 0)
    """
    if gcs_total is None:
        return None
    _require_gcs(gcs_total)
    for points, below in ((4, 6), (3, 10), (2, 13), (1, 15)):
        if gcs_total < below:
            return points
    return 0


def sofa_renal(
    creatinine_mg_dl: float | None, urine_output_ml_day: float | None = None
) -> int | None:
    """SOFA renal subscore: the worse of creatinine and 24-h urine output, where known.

    Creatinine mg/dL 1.2-1.9 -> 1, 2.0-3.4 -> 2, 3.5-4.9 -> 3, >=5.0 -> 4;
    urine output < 500 mL/day -> 3, < 200 -> 4. With creatinine unknown, urine
    output alone gives 3 or 4, else the subscore is unknown (creatinine could
    still score 1-4). Unknown urine output does not block a creatinine score
    (common practice: urine output is often not charted).

    References: CLINICAL.md "Organ dysfunction: SOFA subscores"; Vincent 1996.

    >>> sofa_renal(1.4, urine_output_ml_day=450.0)
    3
    >>> sofa_renal(None, urine_output_ml_day=1500.0) is None
    True
    """
    _require_non_negative("creatinine_mg_dl", creatinine_mg_dl)
    _require_non_negative("urine_output_ml_day", urine_output_ml_day)
    by_urine: int | None = None
    if urine_output_ml_day is not None:
        by_urine = 4 if urine_output_ml_day < 200.0 else 3 if urine_output_ml_day < 500.0 else 0
    if creatinine_mg_dl is None:
        return by_urine if by_urine else None
    by_creatinine = 0
    for points, at_least in ((4, 5.0), (3, 3.5), (2, 2.0), (1, 1.2)):
        if creatinine_mg_dl >= at_least:
            by_creatinine = points
            break
    return max(by_creatinine, by_urine or 0)


def sofa_cardiovascular(
    map_mmhg: float | None,
    *,
    dopamine: float | None = None,
    dobutamine: float | None = None,
    norepinephrine: float | None = None,
    epinephrine: float | None = None,
) -> int | None:
    """SOFA cardiovascular subscore from MAP and catecholamine doses (ug/kg/min).

    MAP < 70 -> 1; dopamine <= 5 or any dobutamine -> 2; dopamine > 5 or
    (nor)epinephrine <= 0.1 -> 3; dopamine > 15 or (nor)epinephrine > 0.1 -> 4.
    A dose of ``None`` is unknown, ``0.0`` is known not running. The score is
    returned only when no unknown input could change it: an unknown dopamine or
    (nor)epinephrine could still give 4, an unknown dobutamine 2, an unknown MAP 1.
    So MAP may be unknown when the known doses already give >= 2 and nothing
    unknown could give more. "Given for at least 1 h" is the caller's job: pass
    only infusions running for >= 1 h.

    References: CLINICAL.md "Organ dysfunction: SOFA subscores"; Vincent 1996.

    >>> sofa_cardiovascular(62.0, dopamine=0.0, dobutamine=0.0, norepinephrine=0.08,
    ...                     epinephrine=0.0)
    3
    >>> sofa_cardiovascular(None, norepinephrine=0.2)  # 4 whatever the rest
    4
    >>> sofa_cardiovascular(75.0) is None  # drugs unknown
    True
    """
    doses = {
        "dopamine": dopamine,
        "dobutamine": dobutamine,
        "norepinephrine": norepinephrine,
        "epinephrine": epinephrine,
    }
    for name, dose in doses.items():
        _require_non_negative(name, dose)
    known = 0
    if dopamine:
        known = max(known, 4 if dopamine > 15.0 else 3 if dopamine > 5.0 else 2)
    if dobutamine:
        known = max(known, 2)
    for catecholamine in (norepinephrine, epinephrine):
        if catecholamine:
            known = max(known, 4 if catecholamine > 0.1 else 3)
    could_reach = 0
    if dobutamine is None:
        could_reach = 2
    if None in (dopamine, norepinephrine, epinephrine):
        could_reach = 4
    if map_mmhg is None:
        could_reach = max(could_reach, 1)
    else:
        known = max(known, 1 if map_mmhg < 70.0 else 0)
    return known if known >= could_reach else None


@dataclass(frozen=True)
class SofaScore:
    """Six SOFA subscores (None = unknown) and their totals.

    >>> s = SofaScore({"respiratory": 2, "coagulation": 1, "liver": 0,
    ...                "cardiovascular": None, "cns": 0, "renal": 3})
    >>> s.total is None, s.known_organs, s.known_total
    (True, 5, 6)
    """

    subscores: Mapping[str, int | None]

    @property
    def total(self) -> int | None:
        """Sum of the six subscores, None unless all six are known."""
        values = [self.subscores.get(organ) for organ in SOFA_ORGANS]
        if any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None)

    @property
    def known_organs(self) -> int:
        """How many of the six subscores are known (data completeness)."""
        return sum(self.subscores.get(organ) is not None for organ in SOFA_ORGANS)

    @property
    def known_total(self) -> int:
        """Sum of the known subscores: a lower bound of the total."""
        return sum(self.subscores.get(organ) or 0 for organ in SOFA_ORGANS)


def sofa(
    *,
    pf_ratio_mmhg: float | None = None,
    sf_ratio: float | None = None,
    respiratory_support: bool | None = None,
    platelets_10e3_ul: float | None = None,
    bilirubin_mg_dl: float | None = None,
    map_mmhg: float | None = None,
    dopamine: float | None = None,
    dobutamine: float | None = None,
    norepinephrine: float | None = None,
    epinephrine: float | None = None,
    gcs_total: int | None = None,
    creatinine_mg_dl: float | None = None,
    urine_output_ml_day: float | None = None,
) -> SofaScore:
    """SOFA score from the latest inputs; every input is optional (None = unknown).

    References: CLINICAL.md "Organ dysfunction: SOFA subscores"; Vincent 1996.

    >>> s = sofa(pf_ratio_mmhg=150.0, respiratory_support=True, platelets_10e3_ul=120.0,
    ...          bilirubin_mg_dl=1.0, map_mmhg=68.0, dopamine=0.0, dobutamine=0.0,
    ...          norepinephrine=0.0, epinephrine=0.0, gcs_total=15, creatinine_mg_dl=2.1)
    >>> s.subscores["respiratory"], s.subscores["renal"], s.total
    (3, 2, 7)
    """
    subscores = {
        "respiratory": sofa_respiratory(pf_ratio_mmhg, sf_ratio, respiratory_support),
        "coagulation": sofa_coagulation(platelets_10e3_ul),
        "liver": sofa_liver(bilirubin_mg_dl),
        "cardiovascular": sofa_cardiovascular(
            map_mmhg,
            dopamine=dopamine,
            dobutamine=dobutamine,
            norepinephrine=norepinephrine,
            epinephrine=epinephrine,
        ),
        "cns": sofa_cns(gcs_total),
        "renal": sofa_renal(creatinine_mg_dl, urine_output_ml_day),
    }
    return SofaScore(MappingProxyType(subscores))


# --- qSOFA (Seymour/Singer JAMA 2016) -------------------------------------------


@dataclass(frozen=True)
class QsofaScore:
    """qSOFA: points known so far and the score when no unknown input could change it.

    ``score`` is None while an input is unknown and the known points are < 2.
    With an unknown input and >= 2 known points, ``score`` is a lower bound, but
    the screen is positive whatever the unknown input is.
    """

    score: int | None
    known_points: int
    known_inputs: int

    @property
    def positive(self) -> bool | None:
        """True when >= 2 points, False when 2 can no longer be reached, else None."""
        if self.known_points >= 2:
            return True
        if self.known_points + (3 - self.known_inputs) < 2:
            return False
        return None


def qsofa(
    resp_rate_per_min: float | None, gcs_total: int | None, sbp_mmhg: float | None
) -> QsofaScore:
    """qSOFA: one point each for RR >= 22/min, GCS < 15 (altered mentation), SBP <= 100 mmHg.

    References: CLINICAL.md "Screening scores"; Seymour/Singer JAMA 2016 qSOFA.

    >>> qsofa(24.0, 14, 118.0)
    QsofaScore(score=2, known_points=2, known_inputs=3)
    >>> q = qsofa(24.0, None, 118.0)
    >>> q.score is None, q.positive is None
    (True, True)
    """
    _require_gcs(gcs_total)
    criteria = (
        None if resp_rate_per_min is None else resp_rate_per_min >= 22.0,
        None if gcs_total is None else gcs_total < 15,
        None if sbp_mmhg is None else sbp_mmhg <= 100.0,
    )
    known_inputs = sum(c is not None for c in criteria)
    known_points = sum(c is True for c in criteria)
    complete = known_inputs == 3 or known_points >= 2
    return QsofaScore(known_points if complete else None, known_points, known_inputs)


# --- NEWS2 (RCP NEWS2 2017) -----------------------------------------------------


def _band(value: float, upper_bounds: tuple[float, ...], points: tuple[int, ...]) -> int:
    """Points of the first band ``(previous bound, bound]`` holding value; the last is open."""
    for bound, score in zip(upper_bounds, points, strict=False):
        if value <= bound:
            return score
    return points[-1]


def news2_resp_rate(resp_rate_per_min: float | None) -> int | None:
    """NEWS2 respiration rate: <=8 -> 3, 9-11 -> 1, 12-20 -> 0, 21-24 -> 2, >=25 -> 3.

    Bands are ``(lower, upper]`` on the table's integers, so 20.5/min scores as 21-24.
    References: CLINICAL.md "Screening scores"; RCP NEWS2 2017 chart 1.

    >>> news2_resp_rate(8.0), news2_resp_rate(20.5), news2_resp_rate(25.0)
    (3, 2, 3)
    """
    if resp_rate_per_min is None:
        return None
    return _band(resp_rate_per_min, (8, 11, 20, 24), (3, 1, 0, 2, 3))


def news2_spo2_scale1(spo2_pct: float | None) -> int | None:
    """NEWS2 SpO2 scale 1: <=91 -> 3, 92-93 -> 2, 94-95 -> 1, >=96 -> 0.

    Scale 2 (hypercapnic respiratory failure) is not implemented.
    References: CLINICAL.md "Screening scores"; RCP NEWS2 2017 chart 1.

    >>> news2_spo2_scale1(93.0), news2_spo2_scale1(96.0)
    (2, 0)
    """
    if spo2_pct is None:
        return None
    return _band(spo2_pct, (91, 93, 95), (3, 2, 1, 0))


def news2_systolic_bp(sbp_mmhg: float | None) -> int | None:
    """NEWS2 systolic BP: <=90 -> 3, 91-100 -> 2, 101-110 -> 1, 111-219 -> 0, >=220 -> 3.

    References: CLINICAL.md "Screening scores"; RCP NEWS2 2017 chart 1.

    >>> news2_systolic_bp(100.0), news2_systolic_bp(220.0)
    (2, 3)
    """
    if sbp_mmhg is None:
        return None
    return _band(sbp_mmhg, (90, 100, 110, 219), (3, 2, 1, 0, 3))


def news2_pulse(pulse_per_min: float | None) -> int | None:
    """NEWS2 pulse: <=40 -> 3, 41-50 -> 1, 51-90 -> 0, 91-110 -> 1, 111-130 -> 2, >=131 -> 3.

    References: CLINICAL.md "Screening scores"; RCP NEWS2 2017 chart 1.

    >>> news2_pulse(50.0), news2_pulse(111.0)
    (1, 2)
    """
    if pulse_per_min is None:
        return None
    return _band(pulse_per_min, (40, 50, 90, 110, 130), (3, 1, 0, 1, 2, 3))


def news2_temperature(temperature_cel: float | None) -> int | None:
    """NEWS2 temperature: <=35.0 -> 3, 35.1-36.0 -> 1, 36.1-38.0 -> 0, 38.1-39.0 -> 1, >=39.1 -> 2.

    Bands are ``(lower, upper]`` on the table's one-decimal bounds, which matches
    the table for every one-decimal value; 36.05 degC scores 0 (as 36.1-38.0).
    References: CLINICAL.md "Screening scores"; RCP NEWS2 2017 chart 1.

    >>> news2_temperature(36.0), news2_temperature(36.05), news2_temperature(39.1)
    (1, 0, 2)
    """
    if temperature_cel is None:
        return None
    return _band(temperature_cel, (35.0, 36.0, 38.0, 39.0), (3, 1, 0, 1, 2))


@dataclass(frozen=True)
class News2Score:
    """NEWS2 parameter points (None = unknown), totals and the RCP clinical risk."""

    parameters: Mapping[str, int | None]

    @property
    def total(self) -> int | None:
        """Aggregate score, None when any parameter is unknown."""
        values = [self.parameters.get(p) for p in NEWS2_PARAMETERS]
        if any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None)

    @property
    def known_total(self) -> int:
        """Sum of the known parameter points: a lower bound of the total."""
        return sum(self.parameters.get(p) or 0 for p in NEWS2_PARAMETERS)

    @property
    def single_parameter_3(self) -> bool | None:
        """True if a known parameter scores 3; None if none does but some are unknown."""
        values = [self.parameters.get(p) for p in NEWS2_PARAMETERS]
        if 3 in values:
            return True
        return None if None in values else False

    @property
    def risk(self) -> str | None:
        """RCP clinical risk: "low" (0-4), "low-medium" (a single 3), "medium" (5-6), "high" (>=7).

        With unknown parameters only "high" is certain (the total can only rise).
        """
        if self.known_total >= 7:
            return "high"
        total = self.total
        if total is None:
            return None
        if total >= 5:
            return "medium"
        return "low-medium" if self.single_parameter_3 else "low"


def news2(
    *,
    resp_rate_per_min: float | None,
    spo2_pct: float | None,
    on_supplemental_o2: bool | None,
    sbp_mmhg: float | None,
    pulse_per_min: float | None,
    consciousness_alert: bool | None,
    temperature_cel: float | None,
) -> News2Score:
    """NEWS2 with SpO2 scale 1; supplemental O2 scores 2 and not alert (new confusion, V, P, U) 3.

    References: CLINICAL.md "Screening scores"; RCP NEWS2 2017 chart 1 and chart 2.

    >>> n = news2(resp_rate_per_min=23.0, spo2_pct=94.0, on_supplemental_o2=True,
    ...           sbp_mmhg=105.0, pulse_per_min=112.0, consciousness_alert=True,
    ...           temperature_cel=38.4)
    >>> n.total, n.risk
    (9, 'high')
    """
    parameters = {
        "resp_rate": news2_resp_rate(resp_rate_per_min),
        "spo2": news2_spo2_scale1(spo2_pct),
        "air_or_oxygen": None if on_supplemental_o2 is None else 2 * on_supplemental_o2,
        "systolic_bp": news2_systolic_bp(sbp_mmhg),
        "pulse": news2_pulse(pulse_per_min),
        "consciousness": None if consciousness_alert is None else 3 * (not consciousness_alert),
        "temperature": news2_temperature(temperature_cel),
    }
    return News2Score(MappingProxyType(parameters))
