"""The other laboratory values (``streams.features.labs``) and how the worker applies them."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from schemas.codes import Quantity
from schemas.common import SourceInfo
from schemas.observations import LabResults, Measurement
from services.replay.physionet2019 import LAB_COLUMNS, VITAL_COLUMNS
from streams.features.base import PatientFacts
from streams.features.catalog import FEATURES
from streams.features.labs import (
    BLOOD_GAS_MAX_AGE_S,
    DAILY_LAB_MAX_AGE_S,
    FREQUENT_LAB_MAX_AGE_S,
    LAB_FEATURES,
    LabFeatures,
)
from streams.patient import _ROUTES, FEATURE_SOURCES, PatientState
from streams.rules import load_rules
from tests.support.patients import T0, seconds, vitals

RULES = load_rules()
T = T0.timestamp()
NONE = PatientFacts()


def labs_message(patient: str, at_s: float, values: dict[Quantity, float]) -> LabResults:
    at = T0 + timedelta(seconds=at_s - T)
    return LabResults(
        patient_id=patient,
        source=SourceInfo(adapter="test"),
        received_at=at + timedelta(minutes=40),
        measurements=tuple(Measurement.of(q, v, at) for q, v in values.items()),
    )


def test_every_feature_is_in_the_catalogue_with_its_unit_under_labs() -> None:
    names = [name for name, _age in LAB_FEATURES.values()]
    assert len(set(names)) == len(names) == 21
    assert {n for n, spec in FEATURES.items() if spec.organ == "labs"} == set(names)
    assert FEATURES["bun_mg_dl"].unit == "mg/dL"
    assert FEATURES["wbc_10e3_ul"].unit == "10*3/uL"
    assert FEATURES["ph"].unit == "[pH]"
    assert FEATURES["bicarbonate_mmol_l"].unit == "mmol/L"


def test_every_physionet_lab_column_reaches_a_feature_group() -> None:
    """No PhysioNet 2019 laboratory value is dropped by the worker any more."""
    dropped = sorted(column for column, (q, _unit) in LAB_COLUMNS.items() if not _ROUTES[q])
    assert dropped == []
    # the vitals the worker still drops: diastolic cuff pressure and EtCO2 (the vitals
    # path is not widened for them; see streams.features.labs)
    vitals_dropped = sorted(c for c, (q, _u) in VITAL_COLUMNS.items() if not _ROUTES[q])
    assert vitals_dropped == ["DBP", "EtCO2"]


@pytest.mark.parametrize(
    ("quantity", "name", "max_age_s"),
    [
        (Quantity.PH, "ph", BLOOD_GAS_MAX_AGE_S),
        (Quantity.GLUCOSE, "glucose_mg_dl", FREQUENT_LAB_MAX_AGE_S),
        (Quantity.UREA_NITROGEN, "bun_mg_dl", DAILY_LAB_MAX_AGE_S),
    ],
)
def test_a_result_is_known_until_its_staleness_limit(
    quantity: Quantity, name: str, max_age_s: float
) -> None:
    labs = LabFeatures()
    labs.observe(quantity, T, 7.2)
    assert labs.features(T, NONE)[name] == 7.2
    assert labs.features(T + max_age_s, NONE)[name] == 7.2
    assert labs.features(T + max_age_s + 1, NONE)[name] is None  # stale: unknown, never 0
    assert labs.features(T - 1, NONE)[name] is None  # specimen not taken yet


def test_a_late_report_of_an_older_specimen_does_not_replace_the_latest() -> None:
    labs = LabFeatures()
    labs.observe(Quantity.POTASSIUM, T + 3600, 5.9)
    labs.observe(Quantity.POTASSIUM, T, 4.1)  # older specimen, reported later
    assert labs.features(T + 7200, NONE)["potassium_mmol_l"] == 5.9
    labs.observe(Quantity.POTASSIUM, T + 3600, 5.1)  # corrected result, same specimen
    assert labs.features(T + 7200, NONE)["potassium_mmol_l"] == 5.1


def test_state_is_one_result_per_lab_and_round_trips() -> None:
    labs = LabFeatures()
    for hour in range(200):  # hourly glucose for 8 days
        labs.observe(Quantity.GLUCOSE, T + hour * 3600, 100.0 + hour)
    labs.observe(Quantity.TROPONIN_I, T, 0.04)
    labs.observe(Quantity.SPO2, T, 97.0)  # not a lab of this group: ignored
    state = json.loads(json.dumps(labs.to_state(), allow_nan=False))
    assert len(state["latest"]) == 2
    restored = LabFeatures.from_state(state)
    at = T + 199 * 3600
    assert restored.features(at, NONE) == labs.features(at, NONE)
    assert restored.features(at, NONE)["glucose_mg_dl"] == 299.0
    assert restored.to_state() == state


def test_the_worker_applies_labs_on_arrival_and_publishes_them() -> None:
    state = PatientState("p-labs")
    state.apply_observations(
        "labs",
        labs_message("p-labs", T, {Quantity.WBC: 16.3, Quantity.UREA_NITROGEN: 41.0}),
        RULES,
    )
    assert state.cache["wbc_10e3_ul"] == 16.3  # applied on arrival, before any snapshot
    for t in range(60, 180):
        state.apply_observations("vitals", vitals("p-labs", T0 + seconds(t), 80), RULES)
    snapshot = state.snapshot((T0 + seconds(179)).timestamp())
    assert snapshot.features["wbc_10e3_ul"].value == 16.3
    assert snapshot.features["bun_mg_dl"].value == 41.0
    assert snapshot.features["bun_mg_dl"].unit == "mg/dL"
    assert snapshot.features["glucose_mg_dl"].value is None  # never measured: unknown
    assert snapshot.features["bun_mg_dl"].age_s == 179.0  # age of the labs source
    assert "labs" not in snapshot.completeness  # not expected for every patient
    later = state.snapshot(T + DAILY_LAB_MAX_AGE_S + 60)
    assert later.features["wbc_10e3_ul"].value is None  # stale at the snapshot's time


def test_the_vitals_path_never_computes_the_labs(monkeypatch: pytest.MonkeyPatch) -> None:
    """1-Hz vitals, including the once-a-minute recomputation of the scores, leave the
    labs group alone: it costs only lab records and snapshots."""
    calls: list[float] = []
    original = LabFeatures.features

    def counting(self: LabFeatures, at_s: float, facts: PatientFacts) -> dict[str, float | None]:
        calls.append(at_s)
        return original(self, at_s, facts)

    monkeypatch.setattr(LabFeatures, "features", counting)
    state = PatientState("p-fast")
    for t in range(600):
        state.apply_observations("vitals", vitals("p-fast", T0 + seconds(t), 80), RULES)
    assert calls == []
    state.apply_observations(
        "labs", labs_message("p-fast", T + 590, {Quantity.GLUCOSE: 140.0}), RULES
    )
    assert calls  # a lab record computes them
    calls.clear()
    state.snapshot(T + 600)
    assert calls == [T + 600]


def test_rules_read_the_labs_on_the_labs_clock() -> None:
    for name, _age in LAB_FEATURES.values():
        assert FEATURE_SOURCES[name] == frozenset({"labs"})


def test_a_state_written_before_the_labs_group_existed_restores() -> None:
    state = PatientState("p-old")
    state.apply_observations("vitals", vitals("p-old", T0, 80), RULES)
    saved = json.loads(json.dumps(state.to_state()))
    del saved["groups"]["labs"]
    restored = PatientState.from_state(saved)
    restored.apply_observations("labs", labs_message("p-old", T + 10, {Quantity.PH: 7.28}), RULES)
    assert restored.snapshot(T + 20).features["ph"].value == 7.28
