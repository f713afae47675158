"""Replay readers checked against rows of the real datasets in ../shared/data."""

from __future__ import annotations

import csv
import gzip
import tarfile
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.codes import Quantity
from schemas.context import ContextEvent
from schemas.observations import ObservationMessage
from services.ingest import Outbound
from services.physionet_eval import select_files
from services.replay import mimic3
from services.replay import mimic3_items as items
from services.replay.common import Skips, event_time
from services.replay.physionet2019 import patient_files
from services.replay.source import UnknownSourceError, open_source, sniff

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PHYSIONET = DATA / "physionet2019" / "setA.psv.tar.gz"
MIMIC3 = DATA / "mimic-iii-demo"
MIMIC2 = DATA / "mimic2-numerics" / "s00001_3975656n_numerics_1min.csv"
T0 = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")


def _obs(record: Outbound) -> ObservationMessage:
    assert isinstance(record.payload, ObservationMessage)
    return record.payload


def _ctx(record: Outbound) -> Any:
    assert isinstance(record.payload, ContextEvent)
    return record.payload.root


def _events(records: list[Outbound], kind: str, key: str | None = None) -> list[Any]:
    """Context events of one kind (of one patient), in stream order."""
    found = [_ctx(r) for r in records if r.topic == "context" and key in (None, r.key)]
    return [e for e in found if e.kind == kind]


def _find(
    records: list[Outbound], key: str, topic: str, at: datetime, quantity: Quantity
) -> list[tuple[float | None, str, bool]]:
    return [
        (m.value, m.unit, m.artefact)
        for r in records
        if r.key == key and r.topic == topic
        for m in _obs(r).measurements
        if m.observed_at == at and m.quantity is quantity
    ]


@pytest.fixture(scope="module")
def physionet() -> list[Outbound]:
    return list(open_source(PHYSIONET, start=T0, patients=3).records)


@pytest.fixture(scope="module")
def mimic3_records() -> list[Outbound]:
    only = frozenset({"mimic3-44212", "mimic3-42281", "mimic3-40124"})
    return list(open_source(MIMIC3, start=T0, only=only).records)


@pytest.fixture(scope="module")
def mimic3_review() -> tuple[list[Outbound], Skips]:
    """Patients of the MIMIC-III review findings (CareVue drips, GCS, MetaVision BP)."""
    only = frozenset(
        {"mimic3-10124", "mimic3-10127", "mimic3-10094", "mimic3-10027", "mimic3-42066"}
        | {"mimic3-40595"}
    )
    source = open_source(MIMIC3, start=T0, only=only)
    return list(source.records), source.skips


@pytest.fixture(scope="module")
def mimic2_records() -> list[Outbound]:
    return [
        r
        for r in open_source(MIMIC2, start=T0).records
        if event_time(r) < T0 + timedelta(minutes=30)
    ]


# PhysioNet 2019 ---------------------------------------------------------------------------


def test_physionet_first_three_patients_sorted_with_admission_at_anchor(
    physionet: list[Outbound],
) -> None:
    assert sorted({r.key for r in physionet}) == ["p000001", "p000002", "p000003"]
    admissions = _events(physionet, "admission")
    first = admissions[0]
    assert [a.patient_id for a in admissions] == ["p000001", "p000002", "p000003"]
    assert (first.observed_at, first.age_years, first.sex) == (T0, 83.14, "female")


def test_physionet_row_is_timed_at_the_end_of_its_hour_and_coded(physionet: list[Outbound]) -> None:
    # p000001.psv row 2: HR 97, O2Sat 95, SBP 98, MAP 75.33, Resp 19, ICULOS 2
    at = T0 + timedelta(hours=2)
    assert _find(physionet, "p000001", "vitals", at, Quantity.HEART_RATE) == [(97.0, "/min", False)]
    assert _find(physionet, "p000001", "vitals", at, Quantity.NBP_MEAN) == [
        (75.33, "mm[Hg]", False)
    ]
    vitals = next(r for r in physionet if r.key == "p000001" and r.topic == "vitals")
    sbp = next(m for m in _obs(vitals).measurements if m.quantity is Quantity.NBP_SYS)
    assert (sbp.code_system.value, sbp.code, sbp.value, sbp.observed_at) == (
        "LOINC",
        "8480-6",
        98.0,
        at,
    )
    # DBP and Temp are NaN in that row: not measured, no measurement
    assert _find(physionet, "p000001", "vitals", at, Quantity.NBP_DIA) == []
    assert _find(physionet, "p000001", "vitals", at, Quantity.TEMPERATURE) == []


def test_physionet_all_nan_row_gives_no_vitals_but_a_label(physionet: list[Outbound]) -> None:
    # ICULOS 1 of p000001 has only NaN vitals and labs
    at = T0 + timedelta(hours=1)
    mine = [r for r in physionet if r.key == "p000001" and event_time(r) == at]
    assert [r.topic for r in mine] == ["context"]
    label = _ctx(mine[0])
    assert (label.kind, label.outcome, label.label, label.label_source) == (
        "outcome_label",
        "sepsis",
        False,
        "physionet2019",
    )


def test_physionet_fio2_fraction_becomes_percent_and_labs_are_loinc(
    physionet: list[Outbound],
) -> None:
    # p000001 ICULOS 5: FiO2 0.28; ICULOS 4: pH 7.36, PaCO2 100, BaseExcess 24
    assert _find(physionet, "p000001", "labs", T0 + timedelta(hours=5), Quantity.FIO2) == [
        (28.0, "%", False)
    ]
    labs = [r for r in physionet if r.key == "p000001" and r.topic == "labs"]
    first = _obs(labs[0])
    assert first.observed_at == T0 + timedelta(hours=4)
    assert {(m.quantity, m.code, m.value) for m in first.measurements} == {
        (Quantity.BASE_EXCESS, "11555-0", 24.0),
        (Quantity.PH, "2744-1", 7.36),
        (Quantity.PACO2, "2019-8", 100.0),
    }


def test_physionet_one_label_per_row_matching_the_file(physionet: list[Outbound]) -> None:
    with tarfile.open(PHYSIONET, "r:gz") as archive:
        handle = archive.extractfile("training_setA/p000001.psv")
        assert handle is not None
        rows = handle.read().decode().splitlines()[1:]
    labels = _events(physionet, "outcome_label", "p000001")
    assert len(labels) == len(rows)
    assert [lab.label for lab in labels] == [row.split("|")[-1] == "1" for row in rows]
    assert [lab.observed_at for lab in labels] == [
        T0 + timedelta(hours=int(row.split("|")[-2])) for row in rows
    ]


def test_physionet_labels_only_after_the_patients_last_row_then_discharge(
    physionet: list[Outbound],
) -> None:
    for pid in ("p000001", "p000002", "p000003"):
        mine = [r for r in physionet if r.key == pid]
        kinds = [_ctx(r).kind if r.topic == "context" else r.topic for r in mine]  # stream order
        first_label = kinds.index("outcome_label")
        last_row = max(i for i, k in enumerate(kinds) if k in ("vitals", "labs"))
        assert first_label > last_row, pid
        assert set(kinds[first_label:-1]) == {"outcome_label"}
        assert kinds[-1] == "discharge"
        last_row_at = event_time(mine[last_row])
        discharge = _ctx(mine[-1])
        assert discharge.observed_at == last_row_at
        # every label was known (received) only at the end of the stay
        assert {_ctx(r).received_at for r in mine[first_label:-1]} == {last_row_at}
    # across patients: a label is never published before its patient's last row
    position = {id(r): i for i, r in enumerate(physionet)}
    for pid in ("p000001", "p000002", "p000003"):
        rows = [position[id(r)] for r in physionet if r.key == pid and r.topic != "context"]
        labels = [
            position[id(r)]
            for r in physionet
            if r.key == pid and r.topic == "context" and _ctx(r).kind == "outcome_label"
        ]
        assert min(labels) > max(rows)


def test_physionet_folder_of_psv_equals_the_archive(tmp_path: Path) -> None:
    with tarfile.open(PHYSIONET, "r:gz") as archive:
        for name in ("p000002", "p000009"):
            handle = archive.extractfile(f"training_setA/{name}.psv")
            assert handle is not None
            (tmp_path / f"{name}.psv").write_bytes(handle.read())
    assert sniff(tmp_path) == "physionet2019"
    from_folder = [r.value() for r in open_source(tmp_path, start=T0).records]
    only = frozenset({"p000002", "p000009"})
    from_tar = [r.value() for r in open_source(PHYSIONET, start=T0, only=only).records]
    assert from_folder == from_tar
    assert len(from_folder) > 50


def test_physionet_as_distributed_zip_tree_plain_tar_or_one_file_read_the_same(
    tmp_path: Path,
) -> None:
    """PhysioNet ships the challenge as a zip of ``training/training_setA|B`` folders; a
    held-out set may come as any of these."""
    names = ("p000002", "p000009")
    texts: dict[str, bytes] = {}
    with tarfile.open(PHYSIONET, "r:gz") as archive:
        for name in names:
            handle = archive.extractfile(f"training_setA/{name}.psv")
            assert handle is not None
            texts[name] = handle.read()
    tree = tmp_path / "training" / "training_setA"
    tree.mkdir(parents=True)
    zipped, plain, xz = tmp_path / "challenge.zip", tmp_path / "set.tar", tmp_path / "set.tar.xz"
    with (
        zipfile.ZipFile(zipped, "w") as out_zip,
        tarfile.open(plain, "w") as out_tar,
        tarfile.open(xz, "w:xz") as out_xz,
    ):
        for name, text in texts.items():
            (tree / f"{name}.psv").write_bytes(text)
            out_zip.writestr(f"training/training_setA/{name}.psv", text)
            out_zip.writestr(f"__MACOSX/training/training_setA/._{name}.psv", b"\x00\x05")
            out_tar.add(tree / f"{name}.psv", arcname=f"{name}.psv")
            out_xz.add(tree / f"{name}.psv", arcname=f"set/{name}.psv")
    expected = [(f.patient_id, f.text) for f in patient_files(PHYSIONET, only=frozenset(names))]
    for source in (tmp_path / "training", zipped, plain, xz):
        assert sniff(source) == "physionet2019"
        assert [(f.patient_id, f.text) for f in patient_files(source)] == expected, source
    single = patient_files(tree / "p000009.psv")
    assert [(f.patient_id, f.text) for f in single] == expected[1:]
    with pytest.raises(ValueError, match="holds no PhysioNet 2019 patient file"):
        select_files(tmp_path / "training", "p100001-")
    (tmp_path / "training" / "p000009.psv").write_bytes(texts["p000009"])  # a stray copy
    with pytest.raises(ValueError, match="patient p000009 is there twice"):
        patient_files(tmp_path / "training", limit=1)
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"not a readable \.zip or tar archive"):
        select_files(tmp_path / "broken.zip", None)


def test_replay_is_deterministic_and_event_time_ordered(physionet: list[Outbound]) -> None:
    again = list(open_source(PHYSIONET, start=T0, patients=3).records)
    assert [(r.topic, r.key, r.value()) for r in again] == [
        (r.topic, r.key, r.value()) for r in physionet
    ]
    # event-time order, except PhysioNet labels (revealed after the patient's last row)
    timed = [r for r in physionet if not (r.topic == "context" and _ctx(r).kind == "outcome_label")]
    keys = [(event_time(r), r.key) for r in timed]
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)
    assert keys[:3] == [(T0, "p000001"), (T0, "p000002"), (T0, "p000003")]


# MIMIC-III demo ---------------------------------------------------------------------------


def _shift(intime: str) -> timedelta:
    return T0 - mimic3.parse_time(intime)


def test_mimic3_patient_moved_so_first_icu_stay_starts_at_anchor(
    mimic3_records: list[Outbound],
) -> None:
    admissions = _events(mimic3_records, "admission", "mimic3-42281")
    # icustays: 2119-10-17 05:59:04 (MICU), then 2119-10-30 15:42:34
    shift = _shift("2119-10-17 05:59:04")
    assert [a.observed_at for a in admissions] == [
        T0,
        mimic3.parse_time("2119-10-30 15:42:34") + shift,
    ]
    assert admissions[0].care_unit == "MICU"


def test_mimic3_crrt_blood_flow_from_a_real_row(mimic3_records: list[Outbound]) -> None:
    # derived_crrt_chartevents.csv: 44212, 2123-11-24 23:27:00, itemid 224144, 200 ml/min
    at = mimic3.parse_time("2123-11-24 23:27:00") + _shift("2123-11-24 14:14:29")
    assert _find(mimic3_records, "mimic3-44212", "crrt", at, Quantity.CRRT_BLOOD_FLOW) == [
        (200.0, "mL/min", False)
    ]
    crrt = [_obs(r) for r in mimic3_records if r.topic == "crrt"]
    modes = {m.value_text for c in crrt for m in c.measurements if m.quantity is Quantity.CRRT_MODE}
    assert modes == {"CVVHDF"}
    # the 1200 ml/min typo in the charting is kept, flagged artefact
    assert any(
        m.quantity is Quantity.CRRT_BLOOD_FLOW and m.value == 1200 and m.artefact
        for c in crrt
        for m in c.measurements
    )


def test_mimic3_fahrenheit_temperature_converted(mimic3_records: list[Outbound]) -> None:
    # chartevents row 5279021: 40124, 2130-02-04 04:00:00, itemid 223761, 95.9 ?F
    at = mimic3.parse_time("2130-02-04 04:00:00") + _shift("2130-02-04 02:27:27")
    assert _find(mimic3_records, "mimic3-40124", "vitals", at, Quantity.TEMPERATURE) == [
        (35.5, "Cel", False)
    ]


def test_mimic3_norepinephrine_rate_in_ug_per_kg_min(mimic3_records: list[Outbound]) -> None:
    # inputevents_mv row 261164: 42281 norepinephrine 16:20 -> 18:51, 3.228 mg, 70 kg,
    # rate 0.3053926286 mcg/kg/min = 3228 ug / 151 min / 70 kg
    shift = _shift("2119-10-17 05:59:04")
    start = mimic3.parse_time("2119-11-10 16:20:00") + shift
    infusions = _events(mimic3_records, "infusion", "mimic3-42281")
    at_start = [i for i in infusions if i.observed_at == start]
    assert len(at_start) == 1
    rate = at_start[0]
    assert (rate.drug, rate.rate_unit) == ("norepinephrine", "ug/kg/min")
    assert rate.rate == pytest.approx(3228 / 151 / 70, rel=1e-3)
    assert rate.rate == 0.305393


def test_mimic3_urine_weight_and_skips(mimic3_records: list[Outbound]) -> None:
    kinds = {_ctx(r).kind for r in mimic3_records if r.topic == "context"}
    assert {"admission", "discharge", "weight", "urine_output", "infusion", "gcs"} <= kinds
    source = open_source(MIMIC3, start=T0, only=frozenset({"mimic3-44212"}))
    list(source.records)
    assert source.patients == 1
    with gzip.open(MIMIC3 / "chartevents.csv.gz", "rt") as handle:
        read = (
            set(items.CHART_VITALS) | items.CHART_FIO2 | items.GCS_TOTAL | items.GCS_EYE
            | items.GCS_VERBAL | items.GCS_MOTOR | items.WEIGHT_KG | items.WEIGHT_LB
        )  # fmt: skip
        errors = [
            row for row in csv.DictReader(handle)
            if row["subject_id"] == "44212" and row["error"] == "1" and int(row["itemid"]) in read
        ]  # fmt: skip
    assert errors  # the real file has charting errors for this patient
    assert source.skips.counts["mimic3_chartevents_error_row"] == len(errors)


def test_mimic3_rate_conversion_needs_a_weight_for_per_minute_doses() -> None:
    assert mimic3.convert_rate(8.0, "mcg/min", 80.0) == (0.1, "ug/kg/min")
    assert mimic3.convert_rate(8.0, "mcgmin", None) is None
    assert mimic3.convert_rate(2.4, "units/hour", None) == (0.04, "U/min")
    assert mimic3.convert_rate(1.0, "furlongs", None) is None


def _rates(records: list[Outbound], key: str, drug: str) -> list[tuple[datetime, float]]:
    return [(i.observed_at, i.rate) for i in _events(records, "infusion", key) if i.drug == drug]


def test_mimic3_carevue_stop_row_without_rate_stops_the_infusion(
    mimic3_review: tuple[list[Outbound], Skips],
) -> None:
    # inputevents_cv 10124 dopamine 30043: rate 10 mcgkgmin at 2192-03-29 11:00, then row
    # 16765340 at 11:05 with no rate and stopped = "Stopped"
    records, _skips = mimic3_review
    shift = _shift("2192-03-29 10:46:51")
    at = mimic3.parse_time("2192-03-29 11:00:00") + shift
    assert _rates(records, "mimic3-10124", "dopamine")[:2] == [
        (at, 10.0),
        (at + timedelta(minutes=5), 0.0),
    ]
    # 10127 dopamine: last rate 5 at 2198-06-29 10:30, D/C'd (amount row) at 14:00;
    # before the fix it ran for the remaining 21 days of the stay
    stop = mimic3.parse_time("2198-06-29 14:00:00") + _shift("2198-06-28 05:35:32")
    assert _rates(records, "mimic3-10127", "dopamine")[-1] == (stop, 0.0)


def test_mimic3_carevue_infusions_are_closed_by_outtime_or_gap(
    mimic3_review: tuple[list[Outbound], Skips],
) -> None:
    records, skips = mimic3_review
    last: dict[tuple[str, str], float] = {}
    for i in (_ctx(r) for r in records if r.topic == "context"):
        if i.kind == "infusion":
            last[(i.patient_id, i.drug)] = i.rate
    assert len(last) >= 5
    assert [k for k, rate in last.items() if rate > 0] == []
    # 10094 norepinephrine: last rate row 2180-03-19 18:00 (0.06), none after; ICU outtime
    # 21:54 -> the 4 h gap rule closes it 1 h later, at 19:00 (counted as an assumption)
    end = mimic3.parse_time("2180-03-19 19:00:00") + _shift("2180-02-29 18:54:39")
    last_norepinephrine = [
        i for i in _events(records, "infusion", "mimic3-10094") if i.drug == "norepinephrine"
    ][-1]
    assert (last_norepinephrine.observed_at, last_norepinephrine.rate) == (end, 0.0)
    assert last_norepinephrine.source.message_control_id.endswith(":gap")
    assumed = [
        i.source.message_control_id.rsplit(":", 1)[1]
        for i in (_ctx(r) for r in records if r.topic == "context")
        if i.kind == "infusion" and i.source.message_control_id.endswith((":gap", ":outtime"))
    ]
    assert skips.counts["mimic3_cv_stop_assumed_gap"] == assumed.count("gap") > 0
    assert skips.counts["mimic3_cv_stop_assumed_outtime"] == assumed.count("outtime")


def test_mimic3_carevue_end_rule_outtime_before_gap() -> None:
    t = mimic3.parse_time("2100-01-01 10:00:00")
    h = timedelta(hours=1)
    # outtime 30 min after the last rate row, no row after: closed at outtime
    assert mimic3._cv_end((t, "r"), None, [t + h / 2]) == (t + h / 2, "outtime", "r")
    # next rate row 2 h later, outtime after it: still running
    assert mimic3._cv_end((t, "r"), t + 2 * h, [t + 3 * h]) is None
    # next rate row 5 h later: closed 1 h after the last one
    assert mimic3._cv_end((t, "r"), t + 5 * h, []) == (t + h, "gap", "r")


def test_mimic3_carevue_vasopressin_charted_per_hour_is_read_as_u_per_h(
    mimic3_review: tuple[list[Outbound], Skips],
) -> None:
    # 10094 vasopressin 30051: rate 1.2 "Umin" every hour next to amount 1.2 U per hour
    # (e.g. 2180-03-18 21:00 and 22:00): 1.2 U / 60 min = 0.02 U/min, not 1.2
    records, skips = mimic3_review
    shift = _shift("2180-02-29 18:54:39")
    rates = _rates(records, "mimic3-10094", "vasopressin")
    assert rates[0] == (mimic3.parse_time("2180-03-18 17:00:00") + shift, 0.02)
    assert max(rate for _at, rate in rates) == pytest.approx(1.2 / 60)
    assert skips.counts["mimic3_cv_vasopressin_read_as_u_per_h"] > 0


def test_mimic3_bladder_irrigation_urine_is_irrigant_out_minus_in(
    mimic3_records: list[Outbound],
) -> None:
    # outputevents 42281, 2119-10-19 04:00: 227489 out 3200 mL, 227488 in 3000 mL -> 200
    shift = _shift("2119-10-17 05:59:04")
    urine = {
        u.observed_at: u.volume_ml for u in _events(mimic3_records, "urine_output", "mimic3-42281")
    }
    assert urine[mimic3.parse_time("2119-10-19 04:00:00") + shift] == 200.0
    assert urine[mimic3.parse_time("2119-10-19 01:00:00") + shift] == 0.0  # 3000 - 3000
    # 21:00: out 2000 < in 3000 (skipped, not 0); 19:00: out 1500 with no in (skipped)
    assert mimic3.parse_time("2119-10-19 21:00:00") + shift not in urine
    assert mimic3.parse_time("2119-10-19 19:00:00") + shift not in urine
    assert len(urine) > 60  # only 24 Foley/void records before


def test_mimic3_venous_blood_gas_is_not_pao2(mimic3_records: list[Outbound]) -> None:
    def gas(key: str, at: datetime) -> set[tuple[Quantity | None, str, float | None]]:
        return {
            (m.quantity, m.code, m.value)
            for r in mimic3_records if r.key == key and r.topic == "labs"
            for m in _obs(r).measurements if m.observed_at == at and m.unit == "mm[Hg]"
        }  # fmt: skip

    # labevents 40124 2130-02-08 09:21: SPECIMEN TYPE VEN, pO2 56
    at = mimic3.parse_time("2130-02-08 09:21:00") + _shift("2130-02-04 02:27:27")
    venous = gas("mimic3-40124", at)
    assert (None, "50821-VEN", 56.0) in venous
    assert not {q for q, _c, _v in venous} & {Quantity.PAO2, Quantity.PACO2}
    # 44212 2123-12-07 10:21: CENTRAL VENOUS, pO2 38
    at = mimic3.parse_time("2123-12-07 10:21:00") + _shift("2123-11-24 14:14:29")
    assert (None, "50821-CENTRAL_VENOUS", 38.0) in gas("mimic3-44212", at)
    # 40124 2130-02-04 09:52: ART, pO2 91 stays PaO2
    at = mimic3.parse_time("2130-02-04 09:52:00") + _shift("2130-02-04 02:27:27")
    assert _find(mimic3_records, "mimic3-40124", "labs", at, Quantity.PAO2) == [
        (91.0, "mm[Hg]", False)
    ]


def test_mimic3_second_arterial_line_and_manual_cuff_pressure(
    mimic3_review: tuple[list[Outbound], Skips],
) -> None:
    records, _skips = mimic3_review
    # chartevents 40595 2144-10-15 10:53: ART BP 225309/225310/225312 = 148/63/89
    at = mimic3.parse_time("2144-10-15 10:53:00") + _shift("2144-10-15 10:47:21")
    found = [
        (q, _find(records, "mimic3-40595", "vitals", at, q))
        for q in (Quantity.ABP_SYS, Quantity.ABP_DIA, Quantity.ABP_MEAN)
    ]
    assert found == [
        (Quantity.ABP_SYS, [(148.0, "mm[Hg]", False)]),
        (Quantity.ABP_DIA, [(63.0, "mm[Hg]", False)]),
        (Quantity.ABP_MEAN, [(89.0, "mm[Hg]", False)]),
    ]
    # 42066 2112-02-08 14:10: Manual Blood Pressure Systolic/Diastolic Left 78/52
    at = mimic3.parse_time("2112-02-08 14:10:00") + _shift("2112-02-04 14:49:33")
    assert (78.0, "mm[Hg]", False) in _find(records, "mimic3-42066", "vitals", at, Quantity.NBP_SYS)
    assert (52.0, "mm[Hg]", False) in _find(records, "mimic3-42066", "vitals", at, Quantity.NBP_DIA)


def test_mimic3_gcs_of_an_intubated_patient_is_not_sent(
    mimic3_review: tuple[list[Outbound], Skips],
) -> None:
    records, skips = mimic3_review
    with gzip.open(MIMIC3 / "chartevents.csv.gz", "rt") as handle:
        intubated = {
            mimic3.parse_time(row["charttime"])
            for row in csv.DictReader(handle)
            if row["subject_id"] == "10027" and row["itemid"] in {"723", "223900"}
            and row["value"] in {"1.0 ET/Trach", "No Response-ETT"} and row["error"] != "1"
        }  # fmt: skip
    # e.g. 2190-07-13 15:00: eye 1, motor 1, verbal "1.0 ET/Trach", total 198 = 3
    assert mimic3.parse_time("2190-07-13 15:00:00") in intubated
    shift = _shift("2190-07-13 10:39:07")
    sent = {g.observed_at for g in _events(records, "gcs", "mimic3-10027")}
    assert sent
    assert not sent & {t + shift for t in intubated}
    assert skips.counts["mimic3_gcs_intubated"] >= len(intubated)


# MIMIC-II numerics ------------------------------------------------------------------------


def test_mimic2_zero_is_not_measured_and_minutes_are_event_time(
    mimic2_records: list[Outbound],
) -> None:
    assert mimic2_records[0].topic == "context"
    assert event_time(mimic2_records[0]) == T0
    vitals = [_obs(r) for r in mimic2_records if r.topic == "vitals"]
    assert len(vitals) == 30  # minutes 0-29 each have at least RESP
    # minute 0: HR 0 (not measured), RESP 23
    assert [(m.quantity, m.value) for m in vitals[0].measurements] == [(Quantity.RESP_RATE, 23.0)]
    # minute 14: HR 55.6, PULSE 55, RESP 12.4, SpO2 96, NBP 120/72/89; ABP 0 = no line
    minute14 = vitals[14]
    assert minute14.observed_at == T0 + timedelta(minutes=14)
    assert {(m.quantity, m.code, m.value) for m in minute14.measurements} == {
        (Quantity.HEART_RATE, "147842", 55.6),
        (Quantity.PULSE_RATE, "149530", 55.0),
        (Quantity.RESP_RATE, "151562", 12.4),
        (Quantity.SPO2, "150456", 96.0),
        (Quantity.NBP_SYS, "150021", 120.0),
        (Quantity.NBP_DIA, "150022", 72.0),
        (Quantity.NBP_MEAN, "150023", 89.0),
    }
    assert not any(m.quantity is Quantity.ABP_MEAN for v in vitals for m in v.measurements)


def test_mimic2_abp_uses_the_mdc_abp_codes() -> None:
    abp = [
        m for r in open_source(MIMIC2, start=T0).records if r.topic == "vitals"
        for m in _obs(r).measurements if m.quantity is Quantity.ABP_MEAN
    ]  # fmt: skip
    assert abp
    assert {m.code for m in abp} == {"150039"}


def test_unknown_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UnknownSourceError):
        sniff(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="timezone"):
        open_source(MIMIC2, start=datetime(2030, 1, 1))
