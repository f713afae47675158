"""SOFA, qSOFA and NEWS2: band boundaries, worked examples and unknown-input handling.

Worked examples are computed by hand from the tables in /work/shared/CLINICAL.md
(Vincent 1996 SOFA table; RCP NEWS2 2017 chart 1 and chart 2; Seymour/Singer
JAMA 2016 qSOFA).
"""

from __future__ import annotations

import itertools
import pickle
import random
from typing import Any

import pytest

from streams.features.scores import (
    NEWS2_PARAMETERS,
    SOFA_ORGANS,
    News2Score,
    QsofaScore,
    SofaScore,
    news2,
    news2_pulse,
    news2_resp_rate,
    news2_spo2_scale1,
    news2_systolic_bp,
    news2_temperature,
    qsofa,
    sofa,
    sofa_cardiovascular,
    sofa_cns,
    sofa_coagulation,
    sofa_liver,
    sofa_renal,
    sofa_respiratory,
)

NO_DRUGS = {"dopamine": 0.0, "dobutamine": 0.0, "norepinephrine": 0.0, "epinephrine": 0.0}


# --- SOFA band boundaries -------------------------------------------------------


@pytest.mark.parametrize(
    ("pf", "support", "points"),
    [
        (400.0, True, 0),
        (399.9, True, 1),
        (300.0, True, 1),
        (299.9, True, 2),
        (200.0, True, 2),
        (199.9, True, 3),
        (100.0, True, 3),
        (99.9, True, 4),
        (199.9, False, 2),
        (60.0, False, 2),
        (60.0, None, 2),
    ],
)
def test_respiratory_pf_bands_need_support_above_2(
    pf: float, support: bool | None, points: int
) -> None:
    assert sofa_respiratory(pf, respiratory_support=support) == points


@pytest.mark.parametrize(
    ("sf", "support", "points"),
    [
        (400.0, True, 0),
        (399.0, True, 1),
        (315.0, True, 1),
        (314.0, True, 2),
        (235.0, True, 2),
        (234.0, True, 3),
        (150.0, True, 3),
        (149.0, True, 4),
        (120.0, None, 2),
    ],
)
def test_respiratory_falls_back_to_rice_sf_bands(
    sf: float, support: bool | None, points: int
) -> None:
    assert sofa_respiratory(None, sf_ratio=sf, respiratory_support=support) == points


def test_respiratory_prefers_the_blood_gas_over_the_sf_surrogate() -> None:
    assert sofa_respiratory(420.0, sf_ratio=150.0, respiratory_support=True) == 0


@pytest.mark.parametrize(
    ("platelets", "points"),
    [(150.0, 0), (149.0, 1), (100.0, 1), (99.0, 2), (50.0, 2), (49.0, 3), (20.0, 3), (19.0, 4)],
)
def test_coagulation_bands(platelets: float, points: int) -> None:
    assert sofa_coagulation(platelets) == points


@pytest.mark.parametrize(
    ("bilirubin", "points"),
    [
        (1.19, 0),
        (1.2, 1),
        (1.9, 1),
        (1.99, 1),
        (2.0, 2),
        (5.9, 2),
        (6.0, 3),
        (11.9, 3),
        (12.0, 4),
    ],
)
def test_liver_bands_are_half_open(bilirubin: float, points: int) -> None:
    assert sofa_liver(bilirubin) == points


@pytest.mark.parametrize(
    ("gcs", "points"),
    [(15, 0), (14, 1), (13, 1), (12, 2), (10, 2), (9, 3), (6, 3), (5, 4), (3, 4)],
)
def test_cns_bands(gcs: int, points: int) -> None:
    assert sofa_cns(gcs) == points


@pytest.mark.parametrize("gcs", [2, 16])
def test_cns_refuses_an_impossible_gcs(gcs: int) -> None:
    with pytest.raises(ValueError, match="GCS"):
        sofa_cns(gcs)


@pytest.mark.parametrize(
    ("creatinine", "urine", "points"),
    [
        (1.19, None, 0),
        (1.2, None, 1),
        (1.99, None, 1),
        (2.0, None, 2),
        (3.49, None, 2),
        (3.5, None, 3),
        (4.99, None, 3),
        (5.0, None, 4),
        (1.0, 500.0, 0),
        (1.0, 499.0, 3),
        (1.0, 200.0, 3),
        (1.0, 199.0, 4),
        (5.5, 450.0, 4),
        (None, 450.0, 3),
        (None, 150.0, 4),
        (None, 500.0, None),
    ],
)
def test_renal_takes_the_worse_of_creatinine_and_urine_output(
    creatinine: float | None, urine: float | None, points: int | None
) -> None:
    assert sofa_renal(creatinine, urine) == points


@pytest.mark.parametrize(
    ("map_mmhg", "doses", "points"),
    [
        (70.0, {}, 0),
        (69.9, {}, 1),
        (75.0, {"dopamine": 5.0}, 2),
        (75.0, {"dobutamine": 2.5}, 2),
        (75.0, {"dopamine": 5.1}, 3),
        (75.0, {"dopamine": 15.0}, 3),
        (75.0, {"dopamine": 15.1}, 4),
        (75.0, {"norepinephrine": 0.1}, 3),
        (75.0, {"norepinephrine": 0.11}, 4),
        (75.0, {"epinephrine": 0.1}, 3),
        (75.0, {"epinephrine": 0.11}, 4),
        (60.0, {"dobutamine": 5.0, "norepinephrine": 0.05}, 3),
    ],
)
def test_cardiovascular_bands_with_every_drug_known(
    map_mmhg: float, doses: dict[str, float], points: int
) -> None:
    assert sofa_cardiovascular(map_mmhg, **{**NO_DRUGS, **doses}) == points


@pytest.mark.parametrize(
    ("map_mmhg", "doses", "points"),
    [
        (None, {**NO_DRUGS, "dopamine": 3.0}, 2),  # MAP could only add 1
        (None, {**NO_DRUGS, "norepinephrine": 0.05}, 3),
        (None, {"norepinephrine": 0.3}, 4),  # nothing can exceed 4
        (None, NO_DRUGS, None),  # MAP could still give 1
        (75.0, {}, None),  # an unknown drug could give up to 4
        (75.0, {"dopamine": 0.0, "norepinephrine": 0.0, "epinephrine": 0.0}, None),
        (
            75.0,
            {"dopamine": 0.0, "norepinephrine": 0.08, "epinephrine": 0.0},
            3,
        ),  # dobutamine unknown gives at most 2
        (75.0, {"dopamine": 3.0, "dobutamine": 0.0, "epinephrine": 0.0}, None),
    ],
)
def test_cardiovascular_is_given_only_when_unknowns_cannot_change_it(
    map_mmhg: float | None, doses: dict[str, float], points: int | None
) -> None:
    assert sofa_cardiovascular(map_mmhg, **doses) == points


def test_negative_dose_is_refused() -> None:
    with pytest.raises(ValueError, match="norepinephrine"):
        sofa_cardiovascular(70.0, **{**NO_DRUGS, "norepinephrine": -0.1})


# --- SOFA worked examples -------------------------------------------------------


def test_septic_shock_patient_worked_by_hand_from_the_vincent_table() -> None:
    """Ventilated septic shock, SI labs converted with CLINICAL.md's factors.

    PaO2 68 mmHg on FiO2 0.5 -> P/F 136 ventilated: 3; platelets 85: 2;
    bilirubin 41 umol/L = 2.4 mg/dL: 2; MAP 63 on norepinephrine 0.12: 4;
    GCS 12 (sedation held): 2; creatinine 168 umol/L = 1.9 mg/dL, urine 380 mL/day: 3.
    Total 3 + 2 + 2 + 4 + 2 + 3 = 16.
    """
    score = sofa(
        pf_ratio_mmhg=68.0 / 0.5,
        respiratory_support=True,
        platelets_10e3_ul=85.0,
        bilirubin_mg_dl=41.0 / 17.1,
        map_mmhg=63.0,
        **{**NO_DRUGS, "norepinephrine": 0.12},
        gcs_total=12,
        creatinine_mg_dl=168.0 / 88.4,
        urine_output_ml_day=380.0,
    )
    assert dict(score.subscores) == {
        "respiratory": 3,
        "coagulation": 2,
        "liver": 2,
        "cardiovascular": 4,
        "cns": 2,
        "renal": 3,
    }
    assert score.total == 16
    assert score.known_organs == 6
    assert score.known_total == 16


def test_ward_patient_without_blood_gas_uses_sf_and_reports_completeness() -> None:
    """SpO2 94 % on FiO2 0.4 -> S/F 235 (Rice 2007: ~ P/F 200): 2 without support."""
    score = sofa(
        sf_ratio=94.0 / 0.40,
        platelets_10e3_ul=140.0,
        gcs_total=14,
        creatinine_mg_dl=1.3,
    )
    assert score.subscores["respiratory"] == 2
    assert score.subscores["liver"] is None
    assert score.subscores["cardiovascular"] is None
    assert score.total is None
    assert score.known_organs == 4
    assert score.known_total == 2 + 1 + 1 + 1


def test_sofa_with_no_inputs_is_all_unknown_not_zero() -> None:
    score = sofa()
    assert set(score.subscores) == set(SOFA_ORGANS)
    assert all(v is None for v in score.subscores.values())
    assert score.total is None
    assert score.known_organs == 0


def test_sofa_score_pickles_as_plain_data() -> None:
    score = sofa(platelets_10e3_ul=40.0, gcs_total=9)
    restored = pickle.loads(pickle.dumps(SofaScore(dict(score.subscores))))
    assert restored.known_total == score.known_total == 6


# --- qSOFA ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rr", "gcs", "sbp", "points"),
    [
        (21.0, 15, 101.0, 0),
        (22.0, 15, 101.0, 1),
        (21.0, 14, 101.0, 1),
        (21.0, 15, 100.0, 1),
        (22.0, 14, 100.0, 3),
    ],
)
def test_qsofa_criteria_boundaries(rr: float, gcs: int, sbp: float, points: int) -> None:
    assert qsofa(rr, gcs, sbp) == QsofaScore(points, points, 3)


def test_qsofa_with_an_unknown_input_and_one_point_is_unknown() -> None:
    result = qsofa(24.0, None, 120.0)
    assert result == QsofaScore(None, 1, 2)
    assert result.positive is None


def test_qsofa_with_two_known_points_is_positive_whatever_is_unknown() -> None:
    result = qsofa(26.0, 13, None)
    assert result.score == 2
    assert result.positive is True


def test_qsofa_negative_is_certain_when_two_points_are_out_of_reach() -> None:
    result = qsofa(16.0, 15, None)
    assert result.score is None
    assert result.positive is False


def test_qsofa_all_unknown() -> None:
    assert qsofa(None, None, None) == QsofaScore(None, 0, 0)


# --- NEWS2 band boundaries (RCP 2017 chart 1) -----------------------------------


@pytest.mark.parametrize(
    ("rr", "points"),
    [
        (8.0, 3),
        (8.5, 1),
        (9.0, 1),
        (11.0, 1),
        (12.0, 0),
        (20.0, 0),
        (20.5, 2),
        (21.0, 2),
        (24.0, 2),
        (25.0, 3),
    ],
)
def test_news2_respiration_rate(rr: float, points: int) -> None:
    assert news2_resp_rate(rr) == points


@pytest.mark.parametrize(
    ("spo2", "points"),
    [(91.0, 3), (92.0, 2), (93.0, 2), (94.0, 1), (95.0, 1), (95.5, 0), (96.0, 0), (100.0, 0)],
)
def test_news2_spo2_scale_1(spo2: float, points: int) -> None:
    assert news2_spo2_scale1(spo2) == points


@pytest.mark.parametrize(
    ("sbp", "points"),
    [
        (90.0, 3),
        (91.0, 2),
        (100.0, 2),
        (101.0, 1),
        (110.0, 1),
        (111.0, 0),
        (219.0, 0),
        (220.0, 3),
    ],
)
def test_news2_systolic_bp(sbp: float, points: int) -> None:
    assert news2_systolic_bp(sbp) == points


@pytest.mark.parametrize(
    ("pulse", "points"),
    [
        (40.0, 3),
        (41.0, 1),
        (50.0, 1),
        (51.0, 0),
        (90.0, 0),
        (91.0, 1),
        (110.0, 1),
        (111.0, 2),
        (130.0, 2),
        (131.0, 3),
    ],
)
def test_news2_pulse(pulse: float, points: int) -> None:
    assert news2_pulse(pulse) == points


@pytest.mark.parametrize(
    ("temperature", "points"),
    [
        (35.0, 3),
        (35.05, 1),
        (35.1, 1),
        (36.0, 1),
        (36.05, 0),
        (36.1, 0),
        (38.0, 0),
        (38.1, 1),
        (39.0, 1),
        (39.1, 2),
    ],
)
def test_news2_temperature_one_decimal_bands(temperature: float, points: int) -> None:
    assert news2_temperature(temperature) == points


def _ward_news2(**overrides: Any) -> News2Score:
    """NEWS2 of a well adult on the ward (every parameter 0), with ``overrides``."""
    vitals: dict[str, Any] = {
        "resp_rate_per_min": 16.0,
        "spo2_pct": 97.0,
        "on_supplemental_o2": False,
        "sbp_mmhg": 125.0,
        "pulse_per_min": 72.0,
        "consciousness_alert": True,
        "temperature_cel": 36.8,
    }
    return news2(**{**vitals, **overrides})


def test_news2_well_patient_scores_0_low() -> None:
    result = _ward_news2()
    assert result.total == 0
    assert result.single_parameter_3 is False
    assert result.risk == "low"


def test_news2_supplemental_oxygen_and_new_confusion() -> None:
    result = _ward_news2(on_supplemental_o2=True, consciousness_alert=False)
    assert result.parameters["air_or_oxygen"] == 2
    assert result.parameters["consciousness"] == 3
    assert result.total == 5
    assert result.risk == "medium"


def test_news2_deteriorating_pneumonia_worked_example() -> None:
    """RR 23 (2) + SpO2 94 (1) + O2 (2) + SBP 105 (1) + pulse 112 (2) + alert (0) + 38.4 (1) = 9."""
    result = news2(
        resp_rate_per_min=23.0,
        spo2_pct=94.0,
        on_supplemental_o2=True,
        sbp_mmhg=105.0,
        pulse_per_min=112.0,
        consciousness_alert=True,
        temperature_cel=38.4,
    )
    assert dict(result.parameters) == {
        "resp_rate": 2,
        "spo2": 1,
        "air_or_oxygen": 2,
        "systolic_bp": 1,
        "pulse": 2,
        "consciousness": 0,
        "temperature": 1,
    }
    assert result.total == 9
    assert result.risk == "high"


def test_news2_single_red_parameter_is_low_medium() -> None:
    """Only SBP 88 scores (3): total 3, a single 3 -> low-medium (RCP 2017 chart 2)."""
    result = _ward_news2(sbp_mmhg=88.0)
    assert result.total == 3
    assert result.single_parameter_3 is True
    assert result.risk == "low-medium"


@pytest.mark.parametrize(
    ("overrides", "total", "risk"),
    [
        ({"pulse_per_min": 95.0, "temperature_cel": 38.3}, 2, "low"),
        ({"pulse_per_min": 115.0, "resp_rate_per_min": 22.0}, 4, "low"),
        ({"pulse_per_min": 115.0, "resp_rate_per_min": 22.0, "sbp_mmhg": 108.0}, 5, "medium"),
        ({"pulse_per_min": 115.0, "resp_rate_per_min": 22.0, "sbp_mmhg": 98.0}, 6, "medium"),
        ({"pulse_per_min": 135.0, "resp_rate_per_min": 22.0, "sbp_mmhg": 98.0}, 7, "high"),
    ],
)
def test_news2_risk_bands(overrides: dict[str, float], total: int, risk: str) -> None:
    result = _ward_news2(**overrides)
    assert (result.total, result.risk) == (total, risk)


def test_news2_unknown_parameter_leaves_total_and_risk_unknown() -> None:
    result = _ward_news2(temperature_cel=None, pulse_per_min=120.0)
    assert result.parameters["temperature"] is None
    assert result.total is None
    assert result.known_total == 2
    assert result.single_parameter_3 is None
    assert result.risk is None


def test_news2_high_risk_is_certain_despite_an_unknown_parameter() -> None:
    result = _ward_news2(temperature_cel=None, resp_rate_per_min=26.0, sbp_mmhg=85.0, spo2_pct=95.0)
    assert result.total is None
    assert result.known_total == 7
    assert result.single_parameter_3 is True
    assert result.risk == "high"


def test_news2_all_unknown() -> None:
    result = news2(
        resp_rate_per_min=None,
        spo2_pct=None,
        on_supplemental_o2=None,
        sbp_mmhg=None,
        pulse_per_min=None,
        consciousness_alert=None,
        temperature_cel=None,
    )
    assert set(result.parameters) == set(NEWS2_PARAMETERS)
    assert all(v is None for v in result.parameters.values())
    assert (result.total, result.known_total, result.single_parameter_3, result.risk) == (
        None,
        0,
        None,
        None,
    )
    assert isinstance(result, News2Score)


# --- properties over plausible ranges (seeded, no hypothesis) -------------------


def test_every_subscore_function_returns_none_for_all_none_inputs() -> None:
    assert sofa_respiratory(None, None, None) is None
    assert sofa_coagulation(None) is None
    assert sofa_liver(None) is None
    assert sofa_cns(None) is None
    assert sofa_renal(None, None) is None
    assert sofa_cardiovascular(None) is None
    for band in (
        news2_resp_rate,
        news2_spo2_scale1,
        news2_systolic_bp,
        news2_pulse,
        news2_temperature,
    ):
        assert band(None) is None


def _maybe(rng: random.Random, low: float, high: float) -> float | None:
    return None if rng.random() < 0.2 else rng.uniform(low, high)


def test_scores_never_raise_and_stay_in_range_for_plausible_floats() -> None:
    rng = random.Random(20240611)
    for _ in range(3000):
        gcs = None if rng.random() < 0.2 else rng.randint(3, 15)
        support = rng.choice([True, False, None])
        score = sofa(
            pf_ratio_mmhg=_maybe(rng, 40.0, 600.0),
            sf_ratio=_maybe(rng, 80.0, 480.0),
            respiratory_support=support,
            platelets_10e3_ul=_maybe(rng, 0.0, 600.0),
            bilirubin_mg_dl=_maybe(rng, 0.1, 30.0),
            map_mmhg=_maybe(rng, 20.0, 150.0),
            dopamine=_maybe(rng, 0.0, 25.0),
            dobutamine=_maybe(rng, 0.0, 20.0),
            norepinephrine=_maybe(rng, 0.0, 1.0),
            epinephrine=_maybe(rng, 0.0, 1.0),
            gcs_total=gcs,
            creatinine_mg_dl=_maybe(rng, 0.2, 15.0),
            urine_output_ml_day=_maybe(rng, 0.0, 5000.0),
        )
        assert all(v is None or 0 <= v <= 4 for v in score.subscores.values())
        assert 0 <= score.known_total <= 24
        assert score.total is None or score.total == score.known_total
        q = qsofa(_maybe(rng, 4.0, 60.0), gcs, _maybe(rng, 40.0, 250.0))
        assert q.score is None or q.score == q.known_points
        n = news2(
            resp_rate_per_min=_maybe(rng, 4.0, 60.0),
            spo2_pct=_maybe(rng, 50.0, 100.0),
            on_supplemental_o2=rng.choice([True, False, None]),
            sbp_mmhg=_maybe(rng, 40.0, 260.0),
            pulse_per_min=_maybe(rng, 20.0, 220.0),
            consciousness_alert=rng.choice([True, False, None]),
            temperature_cel=_maybe(rng, 30.0, 43.0),
        )
        assert 0 <= n.known_total <= 20
        assert n.risk in (None, "low", "low-medium", "medium", "high")


def test_sofa_total_is_known_exactly_when_every_organ_is() -> None:
    for known in itertools.product([False, True], repeat=6):
        subscores = {o: (1 if k else None) for o, k in zip(SOFA_ORGANS, known, strict=True)}
        score = SofaScore(subscores)
        assert (score.total is not None) == all(known)
        assert score.known_organs == sum(known)
