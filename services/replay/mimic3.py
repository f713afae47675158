"""MIMIC-III Clinical Database Demo v1.4 to vitals, labs, crrt and context records.

Source: physionet.org/content/mimiciii-demo/1.4 as gzip CSV (lower-case columns); the
itemids read and what each becomes are in :mod:`services.replay.mimic3_items`.

- Patient id ``mimic3-<subject_id>``: one key per person across ICU stays, so every
  stay, lab and drug of a patient lands on one partition in order. Each ICU stay gives an
  Admission at ``intime`` and a Discharge at ``outtime``.
- Times: MIMIC shifts every patient's dates by its own random offset (years 21xx, time of
  day kept) and gives no zone. The replay moves each patient as a whole so that the first
  ICU ``intime`` falls on the anchor; intervals within a patient are unchanged.
- chartevents: vitals and FiO2 charted at one ``charttime`` form one message; rows with
  ``error = 1`` or no ``valuenum`` are skipped (counted). GCS: CareVue total 198, or the
  MetaVision components summed when all three are charted at one time.
- labevents: only those of the patient's hospital admissions with an ICU stay; sent at
  ``charttime``, the specimen time (MIMIC-III has no result time).
- outputevents: urine volumes (``iserror`` rows skipped) as urine_output at ``charttime``.
- Infusions: MetaVision rows run from ``starttime`` to ``endtime`` at ``rate``
  (``Rewritten`` rows are invalid and skipped); the replay sends the summed rate of a drug
  whenever it changes, 0 when the last row ends. CareVue charts a rate at ``charttime``;
  it is sent when it changes, 0 on a ``Stopped`` row. Catecholamines in ug/kg/min: a
  mcg/min rate is divided by the weight (MetaVision: the row's ``patientweight``;
  CareVue: the patient's last charted weight, else the first); vasopressin in U/min
  (units/hour / 60); furosemide in mg/h, and a MetaVision furosemide row without a rate
  is a push (drug_dose).
- Weight: chartevents admission/daily weights (lbs converted) and each new
  ``patientweight`` of inputevents_mv.
- ``derived_crrt_chartevents.csv``: one CrrtStatus per charttime; items without a Vigil
  quantity (heparin, fluids, system integrity) are kept as flagged unknown measurements
  (code system LOCAL, code = itemid).
"""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Literal

from schemas.codes import CodeSystem, Quantity
from schemas.common import SourceInfo
from schemas.context import (
    Admission,
    Discharge,
    Drug,
    DrugDose,
    Gcs,
    Infusion,
    PatientContext,
    UrineOutput,
    Weight,
)
from schemas.observations import CrrtStatus, LabResults, Measurement, ObservationMessage, VitalSigns
from schemas.units import normalise
from services.ingest import Outbound
from services.replay import mimic3_items as items
from services.replay.common import Skips, context, measure, observation

DEVICE = "mimic3-demo"
SOURCE = SourceInfo(adapter="replay", device_id=DEVICE)

# order of records at one event time within a patient
_RANK_ADMIT, _RANK_WEIGHT, _RANK_OBS, _RANK_CONTEXT, _RANK_DISCHARGE = 0, 1, 2, 3, 9

RateUnit = Literal["ug/kg/min", "U/min", "mg/h"]


def parse_time(text: str) -> datetime:
    """A MIMIC timestamp (``YYYY-MM-DD HH:MM:SS``, no zone) as UTC.

    >>> parse_time("2123-11-24 17:33:00").isoformat()
    '2123-11-24T17:33:00+00:00'
    """
    return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC)


def patient_id(subject_id: int) -> str:
    return f"mimic3-{subject_id}"


@dataclass(frozen=True)
class Stay:
    icustay_id: int
    hadm_id: int
    intime: datetime
    outtime: datetime | None
    care_unit: str


@dataclass
class _Patient:
    subject_id: int
    shift: timedelta
    stays: list[Stay]
    events: list[tuple[datetime, int, int, Callable[[], Outbound]]] = field(default_factory=list)
    weights: list[tuple[datetime, float]] = field(default_factory=list)  # shifted times

    @property
    def pid(self) -> str:
        return patient_id(self.subject_id)


class _Collector:
    """Rows of the selected patients, turned into deferred records (built when yielded)."""

    def __init__(self, patients: dict[int, _Patient], skips: Skips) -> None:
        self.patients = patients
        self.skips = skips
        self.seq = 0

    def add(self, p: _Patient, at: datetime, rank: int, make: Callable[[], Outbound]) -> None:
        self.seq += 1
        p.events.append((at, rank, self.seq, make))

    def time(self, p: _Patient, text: str, reason: str) -> datetime | None:
        try:
            return parse_time(text) + p.shift
        except ValueError:
            self.skips.add(reason)
            return None


def _rows(path: Path) -> Iterator[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        yield from csv.DictReader(handle)


def _int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _message(
    cls: type[ObservationMessage],
    topic: str,
    pid: str,
    specs: list[tuple[Quantity | None, float | None, str | None, str, datetime, str]],
    control_id: str,
) -> Outbound:
    measurements: list[Measurement] = []
    for quantity, value, text, unit, at, local_code in specs:
        if quantity is None:
            measurements.append(
                normalise(CodeSystem.LOCAL, local_code, at, value=value, value_text=text, unit=unit)
            )
        else:
            measurements.append(measure(quantity, at, value=value, value_text=text, unit=unit))
    source = SOURCE.model_copy(update={"message_control_id": control_id})
    return Outbound(topic, pid, observation(cls, pid, measurements, source=source))


def _ctx(event: Callable[[], PatientContext]) -> Outbound:
    return context(event())


def read_source(
    folder: Path,
    anchor: datetime,
    *,
    limit: int | None = None,
    only: frozenset[str] | None = None,
    skips: Skips | None = None,
) -> list[Iterator[Outbound]]:
    """One stream per selected patient (sorted by subject_id), each in event-time order."""
    skips = skips if skips is not None else Skips()
    stays: dict[int, list[Stay]] = defaultdict(list)
    for row in _rows(folder / "icustays.csv.gz"):
        try:
            stay = Stay(
                int(row["icustay_id"]),
                int(row["hadm_id"]),
                parse_time(row["intime"]),
                parse_time(row["outtime"]) if row["outtime"] else None,
                row["first_careunit"] or "ICU",
            )
        except (KeyError, ValueError):
            skips.add("mimic3_bad_icustay")
            continue
        stays[int(row["subject_id"])].append(stay)
    subjects = sorted(s for s in stays if only is None or patient_id(s) in only)
    if limit is not None:
        subjects = subjects[:limit]
    patients = {
        s: _Patient(
            s, anchor - min(st.intime for st in stays[s]), sorted(stays[s], key=lambda x: x.intime)
        )
        for s in subjects
    }
    c = _Collector(patients, skips)
    _admissions(folder, c)
    _chartevents(folder, c)
    _labevents(folder, c)
    _outputevents(folder, c)
    _inputevents_mv(folder, c)
    _inputevents_cv(folder, c)
    _crrt(folder, c)
    return [_emit(patients[s]) for s in subjects]


def _emit(p: _Patient) -> Iterator[Outbound]:
    p.events.sort(key=lambda e: e[:3])
    for _at, _rank, _seq, make in p.events:
        yield make()


def _admissions(folder: Path, c: _Collector) -> None:
    people = {int(r["subject_id"]): r for r in _rows(folder / "patients.csv.gz")}
    deaths: dict[int, datetime] = {}
    for row in _rows(folder / "admissions.csv.gz"):
        if row.get("deathtime"):
            deaths[int(row["hadm_id"])] = parse_time(row["deathtime"])
    for p in c.patients.values():
        person = people.get(p.subject_id, {})
        sex: Literal["female", "male", "unknown"] = {"F": "female", "M": "male"}.get(  # type: ignore[assignment]
            person.get("gender", ""), "unknown"
        )
        dob = parse_time(person["dob"]) if person.get("dob") else None
        for stay in p.stays:
            age = (stay.intime - dob).days / 365.25 if dob else None
            # MIMIC puts patients older than 89 at about 300 years: unknown, not 300
            age = round(age, 2) if age is not None and 0 <= age <= 89.99 else None
            at = stay.intime + p.shift
            admit = partial(
                Admission,
                patient_id=p.pid,
                observed_at=at,
                received_at=at,
                source=SOURCE.model_copy(
                    update={"message_control_id": f"icustay:{stay.icustay_id}"}
                ),
                care_unit=stay.care_unit,
                age_years=age,
                sex=sex,
            )
            c.add(p, at, _RANK_ADMIT, partial(_ctx, admit))
            if stay.outtime is None:
                continue
            died = deaths.get(stay.hadm_id)
            out = stay.outtime + p.shift
            discharge = partial(
                Discharge,
                patient_id=p.pid,
                observed_at=out,
                received_at=out,
                source=SOURCE.model_copy(
                    update={"message_control_id": f"icustay:{stay.icustay_id}"}
                ),
                disposition="death" if died is not None and died <= stay.outtime else "unknown",
            )
            c.add(p, out, _RANK_DISCHARGE, partial(_ctx, discharge))


_Spec = tuple[Quantity | None, float | None, str | None, str, datetime, str]


def _chartevents(folder: Path, c: _Collector) -> None:
    vitals: dict[tuple[int, datetime], list[_Spec]] = {}
    fio2: dict[tuple[int, datetime], list[_Spec]] = {}
    first_row: dict[tuple[str, int, datetime], str] = {}
    gcs: dict[tuple[int, datetime], dict[str, int]] = defaultdict(dict)
    wanted = (
        set(items.CHART_VITALS) | items.CHART_FIO2 | items.GCS_TOTAL | items.GCS_EYE
        | items.GCS_VERBAL | items.GCS_MOTOR | items.WEIGHT_KG | items.WEIGHT_LB
    )  # fmt: skip
    for row in _rows(folder / "chartevents.csv.gz"):
        subject = _int(row.get("subject_id"))
        p = c.patients.get(subject) if subject is not None else None
        itemid = _int(row.get("itemid"))
        if p is None or itemid not in wanted:
            continue
        if row.get("error") == "1":
            c.skips.add("mimic3_chartevents_error_row")
            continue
        value = _float(row.get("valuenum"))
        if value is None:
            c.skips.add("mimic3_chartevents_no_valuenum")
            continue
        at = c.time(p, row["charttime"], "mimic3_chartevents_bad_time")
        if at is None:
            continue
        key = (p.subject_id, at)
        if itemid in items.CHART_VITALS:
            quantity, unit = items.CHART_VITALS[itemid]
            vitals.setdefault(key, []).append((quantity, value, None, unit, at, ""))
            first_row.setdefault(("vitals", *key), row["row_id"])
        elif itemid in items.CHART_FIO2:
            unit = "1" if value <= 1.0 else "%"
            fio2.setdefault(key, []).append((Quantity.FIO2, value, None, unit, at, ""))
            first_row.setdefault(("labs", *key), row["row_id"])
        elif itemid in items.WEIGHT_KG or itemid in items.WEIGHT_LB:
            kg = value * items.KG_PER_LB if itemid in items.WEIGHT_LB else value
            _weight(c, p, at, kg, f"chartevents:{row['row_id']}")
        else:
            part = (
                "total" if itemid in items.GCS_TOTAL
                else "eye" if itemid in items.GCS_EYE
                else "verbal" if itemid in items.GCS_VERBAL
                else "motor"
            )  # fmt: skip
            gcs[key][part] = int(value)
    for (subject, at), specs in vitals.items():
        p = c.patients[subject]
        cid = f"chartevents:{first_row[('vitals', subject, at)]}"
        c.add(p, at, _RANK_OBS, partial(_message, VitalSigns, "vitals", p.pid, specs, cid))
    for (subject, at), specs in fio2.items():
        p = c.patients[subject]
        cid = f"chartevents:{first_row[('labs', subject, at)]}"
        c.add(p, at, _RANK_OBS, partial(_message, LabResults, "labs", p.pid, specs, cid))
    for (subject, at), parts in gcs.items():
        p = c.patients[subject]
        total = parts.get("total")
        if total is None and {"eye", "verbal", "motor"} <= parts.keys():
            total = parts["eye"] + parts["verbal"] + parts["motor"]
        if total is None or not 3 <= total <= 15:
            c.skips.add("mimic3_gcs_incomplete")
            continue
        event = partial(
            Gcs,
            patient_id=p.pid,
            observed_at=at,
            received_at=at,
            source=SOURCE,
            total=total,
            eye=parts.get("eye"),
            verbal=parts.get("verbal"),
            motor=parts.get("motor"),
        )
        c.add(p, at, _RANK_CONTEXT, partial(_ctx, event))


def _weight(c: _Collector, p: _Patient, at: datetime, kg: float, control_id: str) -> None:
    if not 0 < kg <= 500:
        c.skips.add("mimic3_weight_implausible")
        return
    kg = round(kg, 2)
    p.weights.append((at, kg))
    event = partial(
        Weight,
        patient_id=p.pid,
        observed_at=at,
        received_at=at,
        source=SOURCE.model_copy(update={"message_control_id": control_id}),
        weight_kg=kg,
    )
    c.add(p, at, _RANK_WEIGHT, partial(_ctx, event))


def _labevents(folder: Path, c: _Collector) -> None:
    groups: dict[tuple[int, datetime], list[_Spec]] = {}
    first_row: dict[tuple[int, datetime], str] = {}
    for row in _rows(folder / "labevents.csv.gz"):
        subject = _int(row.get("subject_id"))
        p = c.patients.get(subject) if subject is not None else None
        itemid = _int(row.get("itemid"))
        if p is None or itemid is None or itemid not in items.LAB_ITEMS:
            continue
        if _int(row.get("hadm_id")) not in {s.hadm_id for s in p.stays}:
            c.skips.add("mimic3_lab_outside_icu_admissions")
            continue
        quantity, unit, data_unit = items.LAB_ITEMS[itemid]
        uom = (row.get("valueuom") or "").strip()
        if uom and uom.lower() != data_unit.lower():
            c.skips.add("mimic3_lab_unexpected_unit")
            continue
        value = _float(row.get("valuenum"))
        if value is None:
            c.skips.add("mimic3_lab_no_valuenum")
            continue
        at = c.time(p, row["charttime"], "mimic3_lab_bad_time")
        if at is None:
            continue
        groups.setdefault((p.subject_id, at), []).append((quantity, value, None, unit, at, ""))
        first_row.setdefault((p.subject_id, at), row["row_id"])
    for (subject, at), specs in groups.items():
        p = c.patients[subject]
        cid = f"labevents:{first_row[(subject, at)]}"
        c.add(p, at, _RANK_OBS, partial(_message, LabResults, "labs", p.pid, specs, cid))


def _outputevents(folder: Path, c: _Collector) -> None:
    for row in _rows(folder / "outputevents.csv.gz"):
        subject = _int(row.get("subject_id"))
        p = c.patients.get(subject) if subject is not None else None
        if p is None or _int(row.get("itemid")) not in items.URINE_ITEMS:
            continue
        if row.get("iserror") == "1":
            c.skips.add("mimic3_urine_error_row")
            continue
        volume = _float(row.get("value"))
        if volume is None or not 0 <= volume <= 10000:
            c.skips.add("mimic3_urine_no_or_implausible_volume")
            continue
        at = c.time(p, row["charttime"], "mimic3_urine_bad_time")
        if at is None:
            continue
        event = partial(
            UrineOutput,
            patient_id=p.pid,
            observed_at=at,
            received_at=at,
            source=SOURCE.model_copy(
                update={"message_control_id": f"outputevents:{row['row_id']}"}
            ),
            volume_ml=volume,
        )
        c.add(p, at, _RANK_CONTEXT, partial(_ctx, event))


def convert_rate(
    rate: float, rate_uom: str, weight_kg: float | None
) -> tuple[float, RateUnit] | None:
    """A MIMIC infusion rate in the unit the context topic uses, or None if not possible.

    >>> convert_rate(8.0, "mcg/min", 80.0)
    (0.1, 'ug/kg/min')
    >>> convert_rate(2.4, "units/hour", None)
    (0.04, 'U/min')
    >>> convert_rate(8.0, "mcgmin", None) is None
    True
    """
    spec = items.RATE_UNITS.get(rate_uom.strip().lower())
    if spec is None:
        return None
    factor, per_kg, unit = spec
    value = rate * factor
    if per_kg:
        if not weight_kg or weight_kg <= 0:
            return None
        value /= weight_kg
    return round(value, 6), unit  # type: ignore[return-value]


def _infusion(
    c: _Collector, p: _Patient, at: datetime, drug: Drug, rate: float, unit: RateUnit, cid: str
) -> None:
    event = partial(
        Infusion,
        patient_id=p.pid,
        observed_at=at,
        received_at=at,
        source=SOURCE.model_copy(update={"message_control_id": cid}),
        drug=drug,
        rate=rate,
        rate_unit=unit,
    )
    c.add(p, at, _RANK_CONTEXT, partial(_ctx, event))


def _inputevents_mv(folder: Path, c: _Collector) -> None:
    intervals: dict[tuple[int, Drug], list[tuple[datetime, datetime, float, RateUnit, str]]] = (
        defaultdict(list)
    )
    mv_weights: dict[int, list[tuple[datetime, float, str]]] = defaultdict(list)
    for row in _rows(folder / "inputevents_mv.csv.gz"):
        subject = _int(row.get("subject_id"))
        p = c.patients.get(subject) if subject is not None else None
        if p is None:
            continue
        start = c.time(p, row.get("starttime", ""), "mimic3_mv_bad_time")
        if start is None:
            continue
        weight = _float(row.get("patientweight"))
        if weight:
            mv_weights[p.subject_id].append((start, weight, row["row_id"]))
        drug = items.DRUG_ITEMS.get(_int(row.get("itemid")) or 0)
        if drug is None:
            continue
        if row.get("statusdescription") == "Rewritten":
            c.skips.add("mimic3_mv_rewritten")
            continue
        end = c.time(p, row.get("endtime", ""), "mimic3_mv_bad_time")
        if end is None:
            continue
        rate = _float(row.get("rate"))
        cid = f"inputevents_mv:{row['row_id']}"
        if rate is None:
            amount = _float(row.get("amount"))
            if drug is Drug.FUROSEMIDE and amount and (row.get("amountuom") or "") == "mg":
                dose = partial(
                    DrugDose,
                    patient_id=p.pid,
                    observed_at=start,
                    received_at=start,
                    source=SOURCE.model_copy(update={"message_control_id": cid}),
                    drug=drug,
                    dose_mg=amount,
                )
                c.add(p, start, _RANK_CONTEXT, partial(_ctx, dose))
            else:
                c.skips.add("mimic3_mv_drug_without_rate")
            continue
        converted = convert_rate(rate, row.get("rateuom") or "", weight)
        if converted is None:
            c.skips.add("mimic3_mv_rate_not_convertible")
            continue
        intervals[(p.subject_id, drug)].append((start, end, *converted, cid))
    for subject, found in mv_weights.items():
        p = c.patients[subject]
        last: float | None = None
        for at, kg, row_id in sorted(found):
            if kg != last:
                _weight(c, p, at, kg, f"inputevents_mv:{row_id}")
                last = kg
    for (subject, drug), runs in intervals.items():
        p = c.patients[subject]
        unit = runs[0][3]
        times = sorted({t for run in runs for t in run[:2]})
        current = 0.0
        for t in times:
            active = [run for run in runs if run[0] <= t < run[1]]
            total = round(sum(run[2] for run in active), 6)
            if total != current:
                cid = active[0][4] if active else f"{max(r[4] for r in runs if r[1] == t)}:end"
                _infusion(c, p, t, drug, total, unit, cid)
                current = total


def _inputevents_cv(folder: Path, c: _Collector) -> None:
    charted: dict[tuple[int, Drug], dict[datetime, list[tuple[float, RateUnit, bool, str]]]] = (
        defaultdict(lambda: defaultdict(list))
    )
    for row in _rows(folder / "inputevents_cv.csv.gz"):
        subject = _int(row.get("subject_id"))
        p = c.patients.get(subject) if subject is not None else None
        drug = items.DRUG_ITEMS.get(_int(row.get("itemid")) or 0)
        rate = _float(row.get("rate"))
        if p is None or drug is None or rate is None:
            continue  # amount-only rows: the volume given over the hour, not a rate
        at = c.time(p, row.get("charttime", ""), "mimic3_cv_bad_time")
        if at is None:
            continue
        converted = convert_rate(rate, row.get("rateuom") or "", _weight_at(p, at))
        if converted is None:
            c.skips.add("mimic3_cv_rate_not_convertible")
            continue
        stopped = (row.get("stopped") or "") in {"Stopped", "D/C'd"}
        charted[(p.subject_id, drug)][at].append(
            (*converted, stopped, f"inputevents_cv:{row['row_id']}")
        )
    for (subject, drug), by_time in charted.items():
        p = c.patients[subject]
        current = 0.0
        for at in sorted(by_time):
            rows = by_time[at]
            total = 0.0 if any(r[2] for r in rows) else round(sum(r[0] for r in rows), 6)
            if total != current:
                _infusion(c, p, at, drug, total, rows[0][1], rows[0][3])
                current = total


def _weight_at(p: _Patient, at: datetime) -> float | None:
    """The patient's last weight charted at or before ``at``, else the first one charted."""
    if not p.weights:
        return None
    ordered = sorted(p.weights)
    before = [kg for t, kg in ordered if t <= at]
    return before[-1] if before else ordered[0][1]


def _crrt(folder: Path, c: _Collector) -> None:
    path = folder / "derived_crrt_chartevents.csv"
    if not path.exists():
        return
    groups: dict[tuple[int, datetime], list[_Spec]] = {}
    first: dict[tuple[int, datetime], str] = {}
    for number, row in enumerate(_rows(path), start=2):
        subject = _int(row.get("subject_id"))
        p = c.patients.get(subject) if subject is not None else None
        itemid = _int(row.get("itemid"))
        if p is None:
            continue
        if itemid is None or itemid not in items.CRRT_ITEMS:
            c.skips.add("mimic3_crrt_unmapped_item")
            continue
        at = c.time(p, row.get("charttime", ""), "mimic3_crrt_bad_time")
        if at is None:
            continue
        quantity, unit = items.CRRT_ITEMS[itemid]
        value = _float(row.get("valuenum"))
        text = (row.get("value") or "").strip()[:256] or None
        if quantity is not None and quantity is not Quantity.CRRT_MODE and value is None:
            c.skips.add("mimic3_crrt_no_valuenum")
            continue
        if quantity is Quantity.CRRT_MODE:
            value = None
        if value is None and text is None:
            c.skips.add("mimic3_crrt_empty")
            continue
        spec: _Spec = (quantity, value, None if value is not None else text, unit, at, str(itemid))
        groups.setdefault((p.subject_id, at), []).append(spec)
        first.setdefault((p.subject_id, at), str(number))
    for (subject, at), specs in groups.items():
        p = c.patients[subject]
        cid = f"derived_crrt_chartevents:{first[(subject, at)]}"
        c.add(p, at, _RANK_OBS, partial(_message, CrrtStatus, "crrt", p.pid, specs, cid))
