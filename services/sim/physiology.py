"""Pure physiology of one simulated patient: baselines, scenario effects, slow state.

Everything here is a deterministic function of ``(seed, bed, the bed's scenarios,
second)``: each bed draws from its own random streams (``default_rng([seed, bed, k])``),
so adding beds or changing another bed's plan never changes it.

Vital signs follow a mean-reverting AR(1) drift around baselines drawn from adult ICU
ranges, plus measurement noise. Scenarios add their effects (:class:`Effects`) each
second; slow quantities (fever, lactate, creatinine, bilirubin, platelets) follow
their targets with first-order lags. Sources are given per scenario below; thresholds
refer to ../shared/CLINICAL.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from services.sim.scenarios import Equipment, Scenario

STREAM_VITALS_NOISE = 10
_NOISE_BLOCK_S = 3600


@dataclass(frozen=True)
class Baseline:
    """One patient's resting values (adult ICU ranges, clipped to plausible bounds)."""

    heart_rate_per_min: float
    map_mmhg: float
    pulse_pressure_mmhg: float
    spo2_pct: float
    resp_rate_per_min: float
    temperature_c: float
    cvp_mmhg: float
    weight_kg: float
    age_years: int
    sex: Literal["female", "male"]
    rso2_left_pct: float
    rso2_right_pct: float
    lactate_mmol_l: float
    creatinine_mg_dl: float
    bilirubin_mg_dl: float
    platelets_k_ul: float
    pao2_mmhg: float
    fio2_pct: float
    ph: float
    bicarbonate_mmol_l: float
    potassium_mmol_l: float
    urea_nitrogen_mg_dl: float
    hemoglobin_g_dl: float
    wbc_k_ul: float
    urine_ml_kg_h: float
    gcs_total: int
    crrt_blood_flow_ml_min: float
    crrt_net_uf_ml_h: float

    @classmethod
    def draw(cls, seed: int, bed: int, equipment: Equipment) -> Baseline:
        rng = np.random.default_rng([seed, bed])

        def clip(mean: float, sd: float, low: float, high: float) -> float:
            return float(np.clip(rng.normal(mean, sd), low, high))

        hr = clip(82, 8, 62, 105)
        map_mmhg = clip(84, 5, 76, 96)
        pulse_pressure = clip(45, 6, 32, 60)
        spo2 = clip(97, 1, 94, 99.5)
        rr = clip(16, 2, 11, 21)
        temp = clip(37.0, 0.3, 36.3, 37.8)
        rso2 = clip(68, 4, 60, 78)
        on_crrt = equipment.crrt
        return cls(
            heart_rate_per_min=hr,
            map_mmhg=map_mmhg,
            pulse_pressure_mmhg=pulse_pressure,
            spo2_pct=spo2,
            resp_rate_per_min=rr,
            temperature_c=temp,
            cvp_mmhg=clip(7, 1.5, 4, 10),
            weight_kg=round(clip(78, 14, 48, 130), 1),
            age_years=int(clip(64, 14, 19, 94)),
            sex="female" if rng.random() < 0.4 else "male",
            rso2_left_pct=rso2 + clip(0, 1.5, -3, 3),
            rso2_right_pct=rso2 + clip(0, 1.5, -3, 3),
            lactate_mmol_l=clip(1.2, 0.25, 0.6, 1.7),
            creatinine_mg_dl=clip(2.4, 0.5, 1.5, 3.5) if on_crrt else clip(0.9, 0.15, 0.6, 1.15),
            bilirubin_mg_dl=clip(0.7, 0.2, 0.3, 1.1),
            platelets_k_ul=clip(240, 50, 160, 380),
            pao2_mmhg=clip(105, 10, 90, 130),
            fio2_pct=float(rng.choice([21.0, 30.0, 35.0])),
            ph=clip(7.40, 0.02, 7.36, 7.44),
            bicarbonate_mmol_l=clip(24, 1.5, 21, 27),
            potassium_mmol_l=clip(4.1, 0.3, 3.5, 4.8),
            urea_nitrogen_mg_dl=clip(45, 10, 25, 70) if on_crrt else clip(15, 4, 7, 22),
            hemoglobin_g_dl=clip(10.5, 1.2, 8, 14),
            wbc_k_ul=clip(8, 2, 4.5, 11),
            urine_ml_kg_h=clip(0.15, 0.05, 0.05, 0.3) if on_crrt else clip(1.0, 0.2, 0.6, 1.6),
            gcs_total=int(rng.choice([15, 15, 15, 14, 13])),
            crrt_blood_flow_ml_min=float(rng.choice([150.0, 180.0, 200.0])),
            crrt_net_uf_ml_h=float(rng.choice([50.0, 100.0, 150.0])),
        )


@dataclass
class Effects:
    """What the active scenarios do at one second (additive deltas, multiplicative factors)."""

    map_mmhg: float = 0.0
    heart_rate_per_min: float = 0.0
    pulse_pressure_factor: float = 1.0
    spo2_pct: float = 0.0
    resp_rate_per_min: float = 0.0
    fever_c: float = 0.0  # target of the lagged temperature rise
    cvp_mmhg: float = 0.0
    urine_factor: float = 1.0
    lactate_mmol_l: float = 0.0  # target excess
    creatinine_factor: float = 1.0  # target multiplier
    bilirubin_mg_dl: float = 0.0
    platelets_factor: float = 1.0
    wbc_k_ul: float = 0.0
    ph: float = 0.0
    bicarbonate_mmol_l: float = 0.0
    potassium_mmol_l: float = 0.0
    urea_nitrogen_mg_dl: float = 0.0
    pao2_mmhg: float = 0.0
    fio2_pct: float = 0.0
    gcs: float = 0.0
    rso2_left_factor: float = 1.0
    rso2_right_factor: float = 1.0
    congestion: float = 0.0  # 0..1, drives the renal venous Doppler pattern
    clot: float = 0.0  # 0..1 filter clotting
    blood_pump_stopped: bool = False
    norepinephrine_ug_kg_min: float = 0.0
    furosemide_mg_h: float = 0.0
    fluid_in_ml_h: float = 0.0
    artefacts: dict[str, Scenario] = field(default_factory=dict)
    silent_devices: set[str] = field(default_factory=set)


def hypotension(s: Scenario, t: float, b: Baseline, e: Effects) -> None:
    """MAP ramps (30 s) to a nadir of 56 mmHg (severity 1), holds, ramps back.

    Baroreflex tachycardia (+22/min), narrower pulse pressure, faster breathing; a mild
    lactate rise. Nadir below the Sepsis-3 MAP target of 65 mmHg (CLINICAL.md Perfusion).
    """
    depth = s.depth(t, 30.0)
    if depth <= 0:
        return
    nadir = max(35.0, 56.0 - 10.0 * (s.severity - 1.0))
    e.map_mmhg -= depth * (b.map_mmhg - nadir)
    e.heart_rate_per_min += 22.0 * depth
    e.pulse_pressure_factor *= 1.0 - 0.3 * depth
    e.resp_rate_per_min += 4.0 * depth
    e.lactate_mmol_l += 1.5 * depth
    e.urine_factor *= 1.0 - 0.6 * depth


def norepinephrine_rate(s: Scenario, t: float) -> float:
    """Norepinephrine (ug/kg/min) titrated in 0.05 steps every 15 min, then weaned.

    Started when the septic MAP fall is half-way (MAP near 65), capped at 0.1 + 0.1 x
    severity (SOFA cardiovascular 4 above 0.1, CLINICAL.md SOFA); weaned from the start
    of recovery in 0.05 steps every 15 min.

    >>> s = Scenario("septic_shock", 1, onset_s=0, duration_s=4 * 3600)
    >>> [norepinephrine_rate(s, m * 60) for m in (0, 15, 16, 31, 60, 215, 240, 260)]
    [0.0, 0.05, 0.05, 0.1, 0.2, 0.15, 0.05, 0.0]
    """
    ramp = _septic_ramp_s(s)
    start, wean = s.onset_s + 0.5 * ramp, s.end_s - ramp
    cap = 0.1 + 0.1 * s.severity
    if t < start or t >= s.end_s + 4 * 900:
        return 0.0
    if t < wean:
        return round(min(cap, 0.05 * (1 + int((t - start) // 900))), 3)
    peak = min(cap, 0.05 * (1 + int((wean - 1 - start) // 900))) if wean > start else 0.05
    return round(max(0.0, peak - 0.05 * (1 + int((t - wean) // 900))), 3)


def _septic_ramp_s(s: Scenario) -> float:
    return min(1800.0, s.duration_s / 3)


def septic_shock(s: Scenario, t: float, b: Baseline, e: Effects) -> None:
    """Vasodilatory shock: MAP falls towards 50 mmHg, partly corrected by norepinephrine.

    Sepsis-3 (Singer, JAMA 2016; CLINICAL.md SOFA): vasopressors needed for MAP >= 65 and
    lactate > 2 mmol/L. Tachycardia, fever, tachypnoea, oliguria, rising lactate,
    creatinine and bilirubin, falling platelets (SOFA renal, liver, coagulation),
    metabolic acidosis, worse oxygenation; a 1 L fluid bolus in the first hour.
    """
    depth = s.depth(t, _septic_ramp_s(s))
    rate = norepinephrine_rate(s, t)
    e.norepinephrine_ug_kg_min += rate
    e.map_mmhg += 40.0 * rate  # about +8 mmHg at 0.2 ug/kg/min
    if depth <= 0:
        return
    sev = s.severity
    nadir = max(40.0, 50.0 - 5.0 * (sev - 1.0))
    e.map_mmhg -= depth * (b.map_mmhg - nadir)
    e.heart_rate_per_min += 30.0 * sev * depth
    e.pulse_pressure_factor *= 1.0 + 0.15 * depth
    e.resp_rate_per_min += 8.0 * depth
    e.spo2_pct -= 2.0 * depth
    e.fever_c += 1.8 * sev * depth
    e.cvp_mmhg -= 2.0 * depth
    e.urine_factor *= max(0.05, 1.0 - 0.8 * sev * depth)
    e.lactate_mmol_l += 3.5 * sev * depth
    e.creatinine_factor *= 1.0 + 0.4 * sev * depth
    e.bilirubin_mg_dl += 1.5 * sev * depth
    e.platelets_factor *= 1.0 - 0.45 * min(1.0, sev) * depth
    e.wbc_k_ul += 10.0 * depth
    e.ph -= 0.1 * sev * depth
    e.bicarbonate_mmol_l -= 6.0 * sev * depth
    e.pao2_mmhg -= 15.0 * depth
    e.fio2_pct += 15.0 * depth
    e.gcs -= 2.0 * depth
    if t < s.onset_s + 3600:
        e.fluid_in_ml_h += 1000.0


def venous_congestion_aki(s: Scenario, t: float, b: Baseline, e: Effects) -> None:
    """Venous congestion: CVP up ~10 mmHg, positive balance, oliguria, creatinine rising.

    CLINICAL.md "Renal and venous congestion": CVP linked to AKI (Legrand 2013); renal
    venous Doppler continuous -> biphasic -> monophasic discontinuous with worsening
    congestion (Beaubien-Souligny 2020); creatinine rises by KDIGO stage 1 (>= 0.3 mg/dL)
    and more; furosemide infusion once the pattern is discontinuous.
    """
    depth = s.depth(t, min(3600.0, s.duration_s / 4))
    if not s.active(t):
        return
    sev = s.severity
    e.congestion = max(e.congestion, min(1.0, sev) * depth)
    e.cvp_mmhg += 10.0 * sev * depth
    e.heart_rate_per_min += 5.0 * depth
    e.fluid_in_ml_h += 200.0 * sev
    e.urine_factor *= max(0.1, 1.0 - 0.85 * min(1.0, sev) * depth)
    e.creatinine_factor *= 1.0 + 1.5 * sev * depth
    e.potassium_mmol_l += 0.8 * depth
    e.urea_nitrogen_mg_dl += 30.0 * depth
    if e.congestion >= RVD_BIPHASIC_FROM:
        e.furosemide_mg_h += 10.0 * max(1.0, round(sev))


RVD_BIPHASIC_FROM, RVD_MONOPHASIC_FROM = 0.35, 0.7


def renal_venous_doppler_pattern(congestion: float) -> str:
    """Intrarenal venous flow pattern for a congestion level 0..1 (Beaubien-Souligny 2020).

    >>> [renal_venous_doppler_pattern(c) for c in (0.0, 0.5, 0.9)]
    ['continuous', 'biphasic_discontinuous', 'monophasic_discontinuous']
    """
    if congestion >= RVD_MONOPHASIC_FROM:
        return "monophasic_discontinuous"
    if congestion >= RVD_BIPHASIC_FROM:
        return "biphasic_discontinuous"
    return "continuous"


def cerebral_desaturation(s: Scenario, t: float, b: Baseline, e: Effects) -> None:
    """rSO2 falls 30 % (severity 1) below baseline on ``side``, 10 % on the other.

    CLINICAL.md "Brain oxygenation": a drop > 20 % from baseline (Deschamps 2013) or
    an absolute value < 50 %; left/right asymmetry > 10 points.
    """
    depth = s.depth(t, min(120.0, s.duration_s / 4))
    if depth <= 0:
        return
    main = max(0.2, 1.0 - 0.3 * s.severity * depth)
    other = max(0.2, 1.0 - 0.1 * s.severity * depth)
    if s.side == "left":
        e.rso2_left_factor *= main
        e.rso2_right_factor *= other
    else:
        e.rso2_right_factor *= main
        e.rso2_left_factor *= other
    e.gcs -= 1.0 * depth


CLOTTING_PHASE = 0.85  # share of the scenario during which the filter clots; then the pump stops


def crrt_filter_clotting(s: Scenario, t: float, b: Baseline, e: Effects) -> None:
    """Filter clotting: pre-filter pressure and filter pressure drop rise, TMP follows.

    CLINICAL.md "CRRT circuit": rising pre-filter pressure and filter pressure drop
    predict clotting better than TMP; TMP >= 260 mmHg critical; then the blood pump stops
    (machine alarm) and stays stopped until the circuit is changed (end of scenario).
    """
    if not s.active(t):
        return
    progress = min(1.0, (t - s.onset_s) / (CLOTTING_PHASE * s.duration_s))
    e.clot = max(e.clot, min(1.5, s.severity * progress**2))
    if t >= s.onset_s + CLOTTING_PHASE * s.duration_s:
        e.blood_pump_stopped = True


def device_disconnect(s: Scenario, t: float, b: Baseline, e: Effects) -> None:
    """A device (monitor, NIRS or CRRT machine) sends nothing: a gap (CLINICAL.md Alarms:
    communication failure is a technical alarm)."""
    if s.active(t):
        e.silent_devices.add(s.device)


_EFFECTS = {
    "hypotension": hypotension,
    "septic_shock": septic_shock,
    "venous_congestion_aki": venous_congestion_aki,
    "cerebral_desaturation": cerebral_desaturation,
    "crrt_filter_clotting": crrt_filter_clotting,
    "device_disconnect": device_disconnect,
}


def effects_at(
    scenarios: Sequence[Scenario], t: float, baseline: Baseline, *, on_crrt: bool = False
) -> Effects:
    """The combined effects of a bed's scenarios at second ``t``.

    On CRRT with the blood pump running, creatinine is cleared by the filter (its target
    stays at the dialysed baseline) and fluid is removed by net ultrafiltration, not
    furosemide: KDIGO AKI guideline 2012 (CLINICAL.md Renal: RRT defines stage 3, after
    which creatinine no longer stages AKI).
    """
    effects = Effects()
    for scenario in scenarios:
        apply = _EFFECTS.get(scenario.name)
        if apply is not None:
            apply(scenario, t, baseline, effects)
        elif scenario.active(t):  # artefact_*: the devices play them
            effects.artefacts[scenario.name] = scenario
    if on_crrt and not effects.blood_pump_stopped:
        effects.creatinine_factor = 1.0
        effects.furosemide_mg_h = 0.0
    return effects


@dataclass(frozen=True)
class TrueVitals:
    """The patient's vital signs at one second, before any device (unrounded)."""

    heart_rate_per_min: float
    abp_sys_mmhg: float
    abp_dia_mmhg: float
    map_mmhg: float
    spo2_pct: float
    resp_rate_per_min: float
    temperature_c: float
    cvp_mmhg: float


def _lag(tau_s: float, dt_s: float = 1.0) -> float:
    return 1.0 - math.exp(-dt_s / tau_s)


FEVER_TAU_S, LACTATE_TAU_S, CREATININE_TAU_S, SLOW_TAU_S = 2400.0, 1800.0, 6 * 3600.0, 12 * 3600.0
_FEVER = _lag(FEVER_TAU_S)
_ONE_SECOND = (_lag(LACTATE_TAU_S), _lag(CREATININE_TAU_S), _lag(SLOW_TAU_S))

# CVP drift: AR(1) with a 30-min time constant and a stationary SD of 1 mmHg, so a stable
# bed stays within about baseline +/- 3 mmHg and only venous congestion (CVP +10 mmHg)
# reaches the congestion rule's CVP >= 12 mmHg for >= 30 min (CLINICAL.md Renal and
# venous congestion); a 3 mmHg SD with a 200-s time constant made stable beds cross it.
CVP_DRIFT_TAU_S, CVP_DRIFT_SD_MMHG = 1800.0, 1.0
_CVP_PHI = math.exp(-1.0 / CVP_DRIFT_TAU_S)
_CVP_INNOVATION = CVP_DRIFT_SD_MMHG * math.sqrt(1.0 - _CVP_PHI**2)


@dataclass
class SlowState:
    """Laboratory quantities that follow their targets with first-order lags.

    Lactate (tau 30 min), creatinine and WBC (6 h), bilirubin and platelets (12 h):
    what the lab measures (with its analytical CV) at each draw.
    """

    lactate_mmol_l: float
    creatinine_mg_dl: float
    bilirubin_mg_dl: float
    platelets_k_ul: float
    wbc_k_ul: float

    @classmethod
    def of(cls, b: Baseline) -> SlowState:
        return cls(
            b.lactate_mmol_l, b.creatinine_mg_dl, b.bilirubin_mg_dl, b.platelets_k_ul, b.wbc_k_ul
        )

    def advance(self, b: Baseline, e: Effects, dt_s: float = 1.0) -> None:
        """Move ``dt_s`` seconds towards the targets of ``e`` (exact for a constant target)."""
        if dt_s == 1.0:
            lactate, creatinine, slow = _ONE_SECOND
        else:
            lactate, creatinine = _lag(LACTATE_TAU_S, dt_s), _lag(CREATININE_TAU_S, dt_s)
            slow = _lag(SLOW_TAU_S, dt_s)
        self.lactate_mmol_l += (b.lactate_mmol_l + e.lactate_mmol_l - self.lactate_mmol_l) * (
            lactate
        )
        target_creatinine = b.creatinine_mg_dl * e.creatinine_factor
        self.creatinine_mg_dl += (target_creatinine - self.creatinine_mg_dl) * creatinine
        self.bilirubin_mg_dl += (b.bilirubin_mg_dl + e.bilirubin_mg_dl - self.bilirubin_mg_dl) * (
            slow
        )
        target_platelets = b.platelets_k_ul * e.platelets_factor
        self.platelets_k_ul += (target_platelets - self.platelets_k_ul) * slow
        self.wbc_k_ul += (b.wbc_k_ul + e.wbc_k_ul - self.wbc_k_ul) * creatinine


def gcs_total(b: Baseline, e: Effects) -> int:
    """The GCS total a nurse charts (3..15)."""
    return int(min(15, max(3, round(b.gcs_total + e.gcs))))


# Two analytic CVs of the simulated lab (services.sim.bed: creatinine 3 %, others 4 %).
LAB_MARGIN = {"creatinine": 0.06, "bilirubin": 0.08, "platelets": 0.08}
SOFA_ORGANS = ("cardiovascular", "respiratory", "coagulation", "liver", "renal", "cns")


def _points(value: float, cuts: tuple[float, ...], higher_is_worse: bool) -> int:
    if higher_is_worse:
        return sum(value >= c for c in cuts)
    return sum(value < c for c in cuts)


def sofa_subscores(b: Baseline, e: Effects, slow: SlowState) -> dict[str, int]:
    """SOFA subscores of the noise-free state (Vincent 1996; CLINICAL.md SOFA table).

    Respiratory stops at 2: 3 and 4 need respiratory support, which is not simulated.

    >>> b = Baseline.draw(7, 2, Equipment(True, True, False, False))
    >>> sofa_subscores(b, Effects(norepinephrine_ug_kg_min=0.2), SlowState.of(b))["cardiovascular"]
    4
    """
    ne = e.norepinephrine_ug_kg_min
    map_mmhg = b.map_mmhg + e.map_mmhg
    pf = (b.pao2_mmhg + e.pao2_mmhg) / ((b.fio2_pct + e.fio2_pct) / 100.0)
    return {
        "cardiovascular": 4 if ne > 0.1 else 3 if ne > 0 else int(map_mmhg < 70),
        "respiratory": _points(pf, (400, 300), higher_is_worse=False),
        "coagulation": _points(slow.platelets_k_ul, (150, 100, 50, 20), higher_is_worse=False),
        "liver": _points(slow.bilirubin_mg_dl, (1.2, 2.0, 6.0, 12.0), higher_is_worse=True),
        "renal": _points(slow.creatinine_mg_dl, (1.2, 2.0, 3.5, 5.0), higher_is_worse=True),
        "cns": _points(gcs_total(b, e), (15, 13, 10, 6), higher_is_worse=False),
    }


def organs_reached(
    seed: int,
    bed: int,
    scenarios: Sequence[Scenario],
    equipment: Equipment,
    scenario: Scenario,
    step_s: float = 60.0,
) -> tuple[str, ...]:
    """The organs of ``scenario`` that the simulated data actually shows.

    A SOFA organ of the scenario kind's list is kept only if its subscore (of the
    noise-free physiology of this bed, :func:`sofa_subscores`) rises by >= 1 point
    between onset and end, the organ-dysfunction criterion of Sepsis-3 (Singer, JAMA
    2016; CLINICAL.md SOFA). Laboratory organs must cross their cut-off by two analytic
    CVs (:data:`LAB_MARGIN`), so a sample drawn then shows it, not a borderline value.
    Other organs (brain, congestion, crrt_circuit) are kept as listed. The slow
    laboratory values are integrated in ``step_s`` steps, with the same lags as the
    per-second :class:`Patient`.
    """
    candidates = scenario.kind.organs
    if not any(organ in SOFA_ORGANS for organ in candidates):
        return candidates
    b = Baseline.draw(seed, bed, equipment)
    slow = SlowState.of(b)

    def at(t: float, dt: float) -> dict[str, int]:
        e = effects_at(scenarios, t, b, on_crrt=equipment.crrt)
        if dt > 0:
            slow.advance(b, e, dt)
        return sofa_subscores(b, e, slow)

    t = 0.0
    while t + step_s < scenario.onset_s:
        t += step_s
        at(t, step_s)
    before = at(scenario.onset_s, scenario.onset_s - t)
    worst = dict(before)
    t = scenario.onset_s
    while t < scenario.end_s:
        dt = min(step_s, scenario.end_s - t)
        t += dt
        now = at(t, dt)
        conservative = SlowState(
            slow.lactate_mmol_l,
            slow.creatinine_mg_dl / (1.0 + LAB_MARGIN["creatinine"]),
            slow.bilirubin_mg_dl / (1.0 + LAB_MARGIN["bilirubin"]),
            slow.platelets_k_ul * (1.0 + LAB_MARGIN["platelets"]),
            slow.wbc_k_ul,
        )
        lab = sofa_subscores(b, effects_at(scenarios, t, b, on_crrt=equipment.crrt), conservative)
        for organ in ("renal", "liver", "coagulation"):
            now[organ] = lab[organ]
        for organ, points in now.items():
            worst[organ] = max(worst[organ], points)
    return tuple(
        organ
        for organ in candidates
        if organ not in SOFA_ORGANS or worst[organ] >= before[organ] + 1
    )


class Patient:
    """One patient's physiology, stepped one second at a time from second 0."""

    def __init__(
        self, seed: int, bed: int, scenarios: Sequence[Scenario], equipment: Equipment
    ) -> None:
        self.baseline = b = Baseline.draw(seed, bed, equipment)
        self.scenarios = tuple(scenarios)
        self.on_crrt = equipment.crrt
        self._rng = np.random.default_rng([seed, bed, STREAM_VITALS_NOISE])
        self._noise = np.zeros((0, 12))
        self._drift = np.zeros(5)  # hr, map, spo2, rr, temp
        self._cvp_drift = 0.0
        self.fever_c = 0.0
        self.slow = SlowState.of(b)
        self.urine_ml = 0.0  # collected since the last hourly charting
        self.fluid_in_ml = 0.0
        self.effects = Effects()
        self.vitals: TrueVitals | None = None

    def step(self, t: int) -> TrueVitals:
        """Advance to second ``t`` (called for t = 0, 1, 2, ...)."""
        b = self.baseline
        e = effects_at(self.scenarios, t, b, on_crrt=self.on_crrt)
        self.effects = e
        row = t % _NOISE_BLOCK_S
        if row == 0 or len(self._noise) == 0:
            self._noise = self._rng.standard_normal((_NOISE_BLOCK_S, 12))
        n = self._noise[row]
        d = self._drift
        # AR(1) drifts (phi 0.995): hr, map, spo2, rr, temp
        d *= 0.995
        d += n[:5] * (0.25, 0.12, 0.03, 0.05, 0.002)
        self._cvp_drift = _CVP_PHI * self._cvp_drift + _CVP_INNOVATION * float(n[5])
        hr = b.heart_rate_per_min + d[0] + n[6] + e.heart_rate_per_min
        map_mmhg = b.map_mmhg + d[1] + n[7] + e.map_mmhg
        pp = b.pulse_pressure_mmhg * e.pulse_pressure_factor + n[8]
        spo2 = min(100.0, b.spo2_pct + d[2] + 0.4 * n[9] + e.spo2_pct)
        rr = b.resp_rate_per_min + d[3] + 0.6 * n[10] + e.resp_rate_per_min
        self.fever_c += (e.fever_c - self.fever_c) * _FEVER
        temp = b.temperature_c + d[4] + 0.02 * n[11] + self.fever_c
        cvp = b.cvp_mmhg + self._cvp_drift + e.cvp_mmhg
        self.slow.advance(b, e)
        self.urine_ml += b.urine_ml_kg_h * e.urine_factor * b.weight_kg / 3600.0
        self.fluid_in_ml += (80.0 + e.fluid_in_ml_h) / 3600.0
        self.vitals = TrueVitals(
            heart_rate_per_min=hr,
            abp_sys_mmhg=map_mmhg + 2 * pp / 3,
            abp_dia_mmhg=map_mmhg - pp / 3,
            map_mmhg=map_mmhg,
            spo2_pct=spo2,
            resp_rate_per_min=rr,
            temperature_c=temp,
            cvp_mmhg=cvp,
        )
        return self.vitals
