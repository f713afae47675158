"""The feature catalogue: every named feature the worker computes, with unit and organ.

One flat namespace shared by the feature modules (which compute them), the rules
file (which may only name features listed here) and the features topic. Names are
clinical words with the unit last; booleans are 0/1 with unit ``"1"``. A value of
``None`` always means *unknown* (missing or stale input), never 0.

>>> FEATURES["map_median_1min_mmhg"].unit
'mm[Hg]'
>>> FEATURES["kdigo_stage"].organ
'renal'
>>> FEATURES["bun_mg_dl"].unit, FEATURES["bun_mg_dl"].organ
('mg/dL', 'labs')
>>> all(name == spec.name for name, spec in FEATURES.items())
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class FeatureSpec:
    """One named feature: its unit, the organ system it describes, and what it is."""

    name: str
    unit: str
    organ: str
    description: str


_PERFUSION = (
    ("map_mmhg", "mm[Hg]", "latest arterial mean pressure (invasive, else cuff)"),
    ("map_median_1min_mmhg", "mm[Hg]", "1-min median of the invasive arterial mean (ABP)"),
    ("map_min_60min_mmhg", "mm[Hg]", "lowest 1-min median MAP of the last 60 min"),
    ("map_time_below_65_60min_min", "min", "minutes of the last 60 with MAP < 65"),
    ("nbp_map_mmhg", "mm[Hg]", "last cuff (NBP) mean, while under 30 min old"),
    ("nbp_map_low_count", "1", "consecutive cuff means < 65 (NBP-only patients)"),
    ("heart_rate_per_min", "/min", "1-min median heart rate (ECG, else pulse)"),
    ("sbp_mmhg", "mm[Hg]", "1-min median systolic (arterial, else last cuff)"),
    ("shock_index", "1", "heart rate / systolic pressure"),
    ("lactate_mmol_l", "mmol/L", "latest lactate (within 24 h)"),
    ("lactate_clearance_pct", "%", "100 x (previous - latest) / previous, paired 1-6 h apart"),
    ("lactate_clearance_due", "1", "1 when lactate > 2 and its 2-h clearance is not >= 10%"),
    ("capillary_refill_s", "s", "last charted capillary refill time (within 1 h)"),
)
_RENAL = (
    ("creatinine_mg_dl", "mg/dL", "latest creatinine (within 48 h)"),
    ("creatinine_baseline_mg_dl", "mg/dL", "lowest creatinine of the last 7 days"),
    ("kdigo_creatinine_stage", "1", "KDIGO AKI stage by the creatinine criteria (0-3)"),
    ("urine_output_6h_ml_kg_h", "mL/kg/h", "urine output over the last 6 h per kg"),
    ("urine_output_12h_ml_kg_h", "mL/kg/h", "urine output over the last 12 h per kg"),
    ("urine_output_24h_ml_kg_h", "mL/kg/h", "urine output over the last 24 h per kg"),
    ("urine_output_24h_ml", "mL", "urine volume of the last 24 h"),
    ("kdigo_urine_output_stage", "1", "KDIGO AKI stage by urine output (0-3)"),
    ("kdigo_stage", "1", "highest KDIGO stage (creatinine, urine output); 3 on RRT"),
    ("furosemide_stress_urine_2h_ml", "mL", "urine in the 2 h after a furosemide dose"),
    ("furosemide_stress_nonresponse", "1", "1 when that 2-h urine is < 200 mL"),
    ("crrt_liberation_signal", "1", "1 when 24-h urine > 400 mL (2000 with diuretics)"),
)
_CONGESTION = (
    ("cvp_median_5min_mmhg", "mm[Hg]", "5-min median central venous pressure"),
    ("cvp_trend_60min_mmhg_h", "mm[Hg]/h", "CVP slope over the last 60 min"),
    ("fluid_balance_24h_ml", "mL", "intake - urine - other output - CRRT net UF, 24 h"),
    ("rvd_grade", "1", "renal venous Doppler: 0 continuous, 1 biphasic, 2 monophasic"),
    ("rvd_discontinuous", "1", "1 when the last RVD pattern (within 24 h) is discontinuous"),
    ("cvp_rising_with_discontinuous_rvd", "1", "CVP trend > +1 mmHg/h while RVD is discontinuous"),
)
_BRAIN = (
    ("rso2_left_pct", "%", "left rSO2 (15-s median)"),
    ("rso2_right_pct", "%", "right rSO2 (15-s median)"),
    ("rso2_min_pct", "%", "lower of left and right rSO2"),
    ("rso2_baseline_left_pct", "%", "left baseline (device, clinician, or first 10 stable min)"),
    ("rso2_baseline_right_pct", "%", "right baseline"),
    ("rso2_drop_from_baseline_pct", "%", "largest relative drop below baseline, either side"),
    ("rso2_asymmetry_points", "%", "|left - right| rSO2 in points"),
    ("rso2_area_below_50_60min_pct_min", "%.min", "area under 50% over the last 60 min"),
    ("nse_ng_ml", "ng/mL", "latest neuron-specific enolase"),
)
_RESPIRATORY = (
    ("spo2_pct", "%", "1-min median SpO2"),
    ("resp_rate_per_min", "/min", "1-min median respiratory rate"),
    ("fio2_pct", "%", "latest FiO2"),
    ("pao2_mmhg", "mm[Hg]", "latest arterial PaO2"),
    ("pf_ratio_mmhg", "mm[Hg]", "PaO2/FiO2"),
    ("sf_ratio", "1", "SpO2/FiO2 (Rice 2007 surrogate)"),
)
_OTHER_ORGANS = (
    ("platelets_10e3_ul", "10*3/uL", "latest platelet count", "coagulation"),
    ("bilirubin_mg_dl", "mg/dL", "latest total bilirubin", "liver"),
    ("gcs_total", "1", "latest charted Glasgow Coma Scale", "cns"),
    ("temperature_cel", "Cel", "latest temperature", "cardiovascular"),
    ("norepinephrine_ug_kg_min", "ug/kg/min", "current norepinephrine rate", "cardiovascular"),
    ("epinephrine_ug_kg_min", "ug/kg/min", "current epinephrine rate", "cardiovascular"),
    ("dopamine_ug_kg_min", "ug/kg/min", "current dopamine rate", "cardiovascular"),
    ("dobutamine_ug_kg_min", "ug/kg/min", "current dobutamine rate", "cardiovascular"),
    ("vasopressor_on", "1", "1 when any vasopressor runs", "cardiovascular"),
)
_CRRT = (
    ("crrt_running", "1", "1 when the blood pump runs (flow > 0)"),
    ("crrt_blood_flow_ml_min", "mL/min", "latest blood flow"),
    ("crrt_blood_pump_stopped_s", "s", "seconds the blood pump has been stopped"),
    ("crrt_effluent_dose_ml_kg_h", "mL/kg/h", "delivered effluent dose over the last 24 h"),
    ("crrt_downtime_24h_min", "min", "minutes without blood flow in the last 24 h of therapy"),
    ("crrt_net_uf_ml_kg_h", "mL/kg/h", "net ultrafiltration rate per kg"),
    ("crrt_prefilter_pressure_mmhg", "mm[Hg]", "latest pre-filter pressure"),
    ("crrt_prefilter_trend_mmhg_h", "mm[Hg]/h", "pre-filter pressure slope over 60 min"),
    ("crrt_filter_pressure_drop_mmhg", "mm[Hg]", "latest filter pressure drop"),
    ("crrt_filter_pressure_drop_trend_mmhg_h", "mm[Hg]/h", "pressure-drop slope over 60 min"),
    ("crrt_tmp_mmhg", "mm[Hg]", "latest transmembrane pressure"),
    ("crrt_tmp_trend_mmhg_h", "mm[Hg]/h", "TMP slope over 60 min"),
)
_SCORES = (
    ("sofa_respiratory", "1", "SOFA respiratory subscore"),
    ("sofa_coagulation", "1", "SOFA coagulation subscore"),
    ("sofa_liver", "1", "SOFA liver subscore"),
    ("sofa_cardiovascular", "1", "SOFA cardiovascular subscore"),
    ("sofa_cns", "1", "SOFA CNS subscore"),
    ("sofa_renal", "1", "SOFA renal subscore"),
    ("sofa_total", "1", "SOFA total (unknown unless all six organs are known)"),
    ("sofa_known_organs", "1", "how many SOFA organs are known"),
    ("sofa_total_rise_24h", "1", "known-organ SOFA now minus its lowest in 24 h"),
    ("sofa_worsened_organs", "1", "organs now >= 2 and >= 1 above their 24-h lowest"),
    ("qsofa", "1", "qSOFA (0-3)"),
    ("news2", "1", "NEWS2 total"),
    ("news2_single_parameter_3", "1", "1 when any NEWS2 parameter scores 3"),
)
_LABS = (
    ("ph", "[pH]", "latest arterial pH (within 6 h)"),
    ("paco2_mmhg", "mm[Hg]", "latest arterial PaCO2 (within 6 h)"),
    ("base_excess_mmol_l", "mmol/L", "latest base excess (within 6 h)"),
    ("sao2_pct", "%", "latest blood-gas oxygen saturation SaO2 (within 6 h)"),
    ("bicarbonate_mmol_l", "mmol/L", "latest bicarbonate HCO3 (within 24 h)"),
    ("glucose_mg_dl", "mg/dL", "latest glucose (within 24 h)"),
    ("potassium_mmol_l", "mmol/L", "latest potassium (within 24 h)"),
    ("bun_mg_dl", "mg/dL", "latest urea nitrogen, BUN (within 48 h)"),
    ("chloride_mmol_l", "mmol/L", "latest chloride (within 48 h)"),
    ("calcium_mg_dl", "mg/dL", "latest calcium (within 48 h)"),
    ("magnesium_mg_dl", "mg/dL", "latest magnesium (within 48 h)"),
    ("phosphate_mg_dl", "mg/dL", "latest phosphate (within 48 h)"),
    ("wbc_10e3_ul", "10*3/uL", "latest white blood cell count (within 48 h)"),
    ("hemoglobin_g_dl", "g/dL", "latest haemoglobin (within 48 h)"),
    ("hematocrit_pct", "%", "latest haematocrit (within 48 h)"),
    ("ast_u_l", "U/L", "latest aspartate aminotransferase (within 48 h)"),
    ("alkaline_phosphatase_u_l", "U/L", "latest alkaline phosphatase (within 48 h)"),
    ("bilirubin_direct_mg_dl", "mg/dL", "latest direct bilirubin (within 48 h)"),
    ("ptt_s", "s", "latest partial thromboplastin time (within 48 h)"),
    ("fibrinogen_mg_dl", "mg/dL", "latest fibrinogen (within 48 h)"),
    ("troponin_i_ng_ml", "ng/mL", "latest troponin I (within 48 h)"),
)
"""Labs no rule reads, for the risk models (``streams.features.labs``). They span
several organs (acid-base, electrolytes, blood count, liver, coagulation, heart), so
they share the organ ``"labs"``: not one of the organ row's organs, and left out of
the snapshot's per-organ completeness (most are not expected for every patient)."""
_TECHNICAL = (
    ("vitals_data_age_s", "s", "seconds since the last vitals sample"),
    ("arterial_line_data_age_s", "s", "seconds since the last arterial mean"),
    ("nirs_data_age_s", "s", "seconds since the last rSO2 sample"),
    ("crrt_data_age_s", "s", "seconds since the last CRRT status"),
    ("vitals_interval_s", "s", "median seconds between the last vitals samples (cadence)"),
    ("nirs_interval_s", "s", "median seconds between the last rSO2 samples (cadence)"),
    ("crrt_interval_s", "s", "median seconds between the last CRRT statuses (cadence)"),
    ("vitals_artefact_fraction_5min", "1", "fraction of vitals values flagged artefact, 5 min"),
    ("nirs_artefact_fraction_5min", "1", "fraction of rSO2 values flagged artefact, 5 min"),
)

_RISK = (
    ("risk_mods_progression_6h", "1", "probability of MODS progression within 6 h (risk agent)"),
    ("risk_sepsis", "1", "probability of sepsis, PhysioNet 2019 label (risk agent)"),
    ("risk_sepsis_threshold_ratio", "1", "sepsis probability / the model's decision threshold"),
    ("risk_cold_start", "1", "1 while the latest risk score is the rule-based fallback"),
)
"""Inputs from the risk topic (``streams.risk``): read by rules, never published back on
the features topic (the risk agent would learn from its own output)."""

_ORGAN_OF = {
    "perfusion": _PERFUSION,
    "renal": _RENAL,
    "congestion": _CONGESTION,
    "brain": _BRAIN,
    "respiratory": _RESPIRATORY,
    "crrt": _CRRT,
    "scores": _SCORES,
    "labs": _LABS,
    "technical": _TECHNICAL,
    "risk": _RISK,
}


def _catalogue() -> dict[str, FeatureSpec]:
    found: dict[str, FeatureSpec] = {}
    for organ, rows in _ORGAN_OF.items():
        for name, unit, description in rows:
            found[name] = FeatureSpec(name, unit, organ, description)
    for name, unit, description, organ in _OTHER_ORGANS:
        found[name] = FeatureSpec(name, unit, organ, description)
    return found


FEATURES: Mapping[str, FeatureSpec] = MappingProxyType(_catalogue())
"""Every feature by name."""
