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
  MetaVision components summed when all three are charted at one time; none when the
  verbal part is charted as intubated (``1.0 ET/Trach``, ``No Response-ETT``), counted
  ``mimic3_gcs_intubated``: the verbal score cannot be assessed, and the stored 1 would
  put a spurious CNS SOFA on every ventilated patient (Gcs needs a total).
- labevents: only those of the patient's hospital admissions with an ICU stay; sent at
  ``charttime``, the specimen time (MIMIC-III has no result time). pO2/pCO2 are
  PaO2/PaCO2 only when the SPECIMEN TYPE (50800) of that charttime is ``ART``; a venous,
  mixed-venous or untyped gas is kept as a flagged unknown (LOCAL ``50821-VEN`` ...).
- outputevents: urine volumes (``iserror`` rows skipped) as urine_output at ``charttime``;
  under bladder irrigation the urine is GU irrigant out (227489) minus in (227488) at one
  ``charttime`` (mimic-code urine output); unpaired or negative pairs are skipped, counted.
- Infusions: MetaVision rows run from ``starttime`` to ``endtime`` at ``rate``
  (``Rewritten`` rows are invalid and skipped); the replay sends the summed rate of a drug
  whenever it changes, 0 when the last row ends. CareVue charts a rate at ``charttime``;
  it is sent when it changes, 0 on a ``Stopped``/``D/C'd`` row (with or without a rate),
  and, assumed and counted, 0 at the ICU ``outtime`` or 1 h after the last rate row when
  none follows within 4 h. CareVue vasopressin above 0.2 U/min is the hourly rate charted
  as "Umin" (read as U/h, counted). Catecholamines in ug/kg/min: a
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

    def patient_of(self, row: dict[str, str]) -> _Patient | None:
        """The selected patient a row belongs to, if any."""
        subject = _int(row.get("subject_id"))
        return self.patients.get(subject) if subject is not None else None

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
    intubated: set[tuple[int, datetime]] = set()
    wanted = (
        set(items.CHART_VITALS) | items.CHART_FIO2 | items.GCS_TOTAL | items.GCS_EYE
        | items.GCS_VERBAL | items.GCS_MOTOR | items.WEIGHT_KG | items.WEIGHT_LB
    )  # fmt: skip
    for row in _rows(folder / "chartevents.csv.gz"):
        p = c.patient_of(row)
        itemid = _int(row.get("itemid"))
        if p is None or itemid not in wanted:
            continue
        if row.get("error") == "1":
            c.skips.add("mimic3_chartevents_error_row")
            continue
        if itemid in items.GCS_VERBAL and (row.get("value") or "").strip() in (
            items.GCS_VERBAL_INTUBATED
        ):
            at = c.time(p, row["charttime"], "mimic3_chartevents_bad_time")
            if at is not None:
                intubated.add((p.subject_id, at))
                gcs.setdefault((p.subject_id, at), {})
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
        if (subject, at) in intubated:
            # verbal charted "ET/Trach" / "No Response-ETT": not assessable, not a 1. Gcs
            # needs a total, and a total with verbal 1 would fake a CNS SOFA of 3-4.
            c.skips.add("mimic3_gcs_intubated")
            continue
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
    groups: dict[tuple[int, datetime], list[tuple[int, _Spec]]] = {}
    first_row: dict[tuple[int, datetime], str] = {}
    specimens: dict[tuple[int, datetime], set[str]] = defaultdict(set)
    for row in _rows(folder / "labevents.csv.gz"):
        p = c.patient_of(row)
        itemid = _int(row.get("itemid"))
        if p is not None and itemid == items.LAB_SPECIMEN_TYPE:
            at = c.time(p, row["charttime"], "mimic3_lab_bad_time")
            if at is not None:
                specimens[(p.subject_id, at)].add((row.get("value") or "").strip().upper())
            continue
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
        spec: _Spec = (quantity, value, None, unit, at, "")
        groups.setdefault((p.subject_id, at), []).append((itemid, spec))
        first_row.setdefault((p.subject_id, at), row["row_id"])
    for (subject, at), found in groups.items():
        p = c.patients[subject]
        specs = [
            _specimen_checked(c, itemid, spec, specimens.get((subject, at)))
            for itemid, spec in found
        ]
        cid = f"labevents:{first_row[(subject, at)]}"
        c.add(p, at, _RANK_OBS, partial(_message, LabResults, "labs", p.pid, specs, cid))


def _specimen_checked(c: _Collector, itemid: int, spec: _Spec, types: set[str] | None) -> _Spec:
    """pO2/pCO2 keep PaO2/PaCO2 only when the gas is arterial (SPECIMEN TYPE 50800 = ART).

    A venous, mixed-venous or untyped gas is kept as a flagged unknown: quantity None,
    LOCAL code ``<itemid>-<specimen>`` (e.g. ``50821-VEN``), counted.

    >>> t = parse_time("2100-01-01 00:00:00")
    >>> c = _Collector({}, Skips())
    >>> _specimen_checked(c, 50821, (Quantity.PAO2, 40.0, None, "mm[Hg]", t, ""), {"VEN"})[::5]
    (None, '50821-VEN')
    >>> c.skips.counts["mimic3_lab_gas_not_arterial"]
    1
    """
    if itemid not in items.ARTERIAL_ONLY or types == {items.ARTERIAL_SPECIMEN}:
        return spec
    _quantity, value, text, unit, at, _code = spec
    if not types:
        kind = "UNKNOWN"
        c.skips.add("mimic3_lab_gas_specimen_unknown")
    else:
        kind = "/".join(sorted(types)).replace(" ", "_")
        c.skips.add("mimic3_lab_gas_not_arterial")
    return (None, value, text, unit, at, f"{itemid}-{kind}")


def _outputevents(folder: Path, c: _Collector) -> None:
    irrigant: dict[tuple[int, datetime], dict[int, tuple[float, str]]] = defaultdict(dict)
    wanted = items.URINE_ITEMS | {items.GU_IRRIGANT_IN, items.GU_IRRIGANT_OUT}
    for row in _rows(folder / "outputevents.csv.gz"):
        p = c.patient_of(row)
        itemid = _int(row.get("itemid"))
        if p is None or itemid not in wanted:
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
        if itemid in items.URINE_ITEMS:
            _urine(c, p, at, volume, f"outputevents:{row['row_id']}")
            continue
        pair = irrigant[(p.subject_id, at)]
        before, first = pair.get(itemid, (0.0, row["row_id"]))  # same item twice: add up
        pair[itemid] = (before + volume, first)
    for (subject, at), pair in irrigant.items():
        drained, given = pair.get(items.GU_IRRIGANT_OUT), pair.get(items.GU_IRRIGANT_IN)
        if drained is None or given is None:
            # the other half is not charted at this time: the urine share is unknown
            c.skips.add("mimic3_urine_irrigant_unpaired")
            continue
        urine = drained[0] - given[0]
        if urine < 0:
            # more irrigant in than drained out: charting lag, not a negative urine
            c.skips.add("mimic3_urine_irrigant_negative")
            continue
        _urine(c, c.patients[subject], at, urine, f"outputevents:{drained[1]}")


def _urine(c: _Collector, p: _Patient, at: datetime, volume: float, control_id: str) -> None:
    event = partial(
        UrineOutput,
        patient_id=p.pid,
        observed_at=at,
        received_at=at,
        source=SOURCE.model_copy(update={"message_control_id": control_id}),
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
        p = c.patient_of(row)
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


_CV_STOPPED = frozenset({"Stopped", "D/C'd"})
CV_GAP = timedelta(hours=4)
CV_GAP_STOP_AFTER = timedelta(hours=1)


def _inputevents_cv(folder: Path, c: _Collector) -> None:
    """CareVue infusions: a rate is charted at ``charttime``; a row whose ``stopped`` is
    ``Stopped`` or ``D/C'd`` ends the infusion (rate 0) whether or not it has a rate
    (MIMIC-III inputevents_cv documentation: STOPPED). CareVue has no end time, so a rate
    still > 0 is closed (counted as assumptions) at the ICU ``outtime``, or, after more
    than :data:`CV_GAP` without a new rate row, 1 h after the last one (assumption: a
    running infusion is charted at least hourly)."""
    charted: dict[tuple[int, Drug], dict[datetime, list[tuple[float, RateUnit, bool, str]]]] = (
        defaultdict(lambda: defaultdict(list))
    )
    for row in _rows(folder / "inputevents_cv.csv.gz"):
        p = c.patient_of(row)
        itemid = _int(row.get("itemid")) or 0
        drug = items.DRUG_ITEMS.get(itemid)
        if p is None or drug is None:
            continue
        stopped = (row.get("stopped") or "") in _CV_STOPPED
        rate = _float(row.get("rate"))
        if rate is None and not stopped:
            continue  # amount-only rows: the volume given over the hour, not a rate
        at = c.time(p, row.get("charttime", ""), "mimic3_cv_bad_time")
        if at is None:
            continue
        cid = f"inputevents_cv:{row['row_id']}"
        if stopped or rate is None:
            charted[(p.subject_id, drug)][at].append((0.0, "U/min", True, cid))
            continue
        uom = row.get("rateuom") or ""
        if itemid == items.VASOPRESSIN_CV and rate > items.VASOPRESSIN_MAX_U_PER_MIN:
            uom = "uhr"  # charted "Umin", but the hourly rate (mimic3_items)
            c.skips.add("mimic3_cv_vasopressin_read_as_u_per_h")
        converted = convert_rate(rate, uom, _weight_at(p, at))
        if converted is None:
            c.skips.add("mimic3_cv_rate_not_convertible")
            continue
        charted[(p.subject_id, drug)][at].append((*converted, False, cid))
    for (subject, drug), by_time in charted.items():
        p = c.patients[subject]
        outs = sorted(s.outtime + p.shift for s in p.stays if s.outtime is not None)
        current, last = 0.0, None
        unit: RateUnit = "U/min"  # of the last rate sent; a 0 travels in the same unit
        for at in [*sorted(by_time), None]:
            if current > 0 and last is not None:
                end = _cv_end(last, at, outs)
                if end is not None:
                    c.skips.add(f"mimic3_cv_stop_assumed_{end[1]}")
                    _infusion(c, p, end[0], drug, 0.0, unit, f"{end[2]}:{end[1]}")
                    current = 0.0
            if at is None:
                break
            rows = by_time[at]
            running = [r for r in rows if not r[2]]
            if any(r[2] for r in rows) or not running:
                total, cid = 0.0, next((r[3] for r in rows if r[2]), rows[0][3])
            else:
                total, unit, cid = (
                    round(sum(r[0] for r in running), 6),
                    running[0][1],
                    running[0][3],
                )
                last = (at, cid)
            if total != current:
                _infusion(c, p, at, drug, total, unit, cid)
                current = total


def _cv_end(
    last: tuple[datetime, str], following: datetime | None, outs: list[datetime]
) -> tuple[datetime, str, str] | None:
    """When a CareVue rate last charted at ``last`` ends before the ``following`` row:
    the first ICU outtime in between, or the last rate row + 1 h after a gap > 4 h."""
    at, cid = last
    ends: list[tuple[datetime, str, str]] = [
        (out, "outtime", cid) for out in outs if at < out and (following is None or out < following)
    ]
    if following is None or following - at > CV_GAP:
        ends.append((at + CV_GAP_STOP_AFTER, "gap", cid))
    return min(ends) if ends else None


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
        p = c.patient_of(row)
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
