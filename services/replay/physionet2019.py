"""PhysioNet/CinC Challenge 2019 (sepsis) set A: hourly rows to vitals, labs and context.

Source: physionet.org/content/challenge-2019/1.0.0, training set A; one pipe-separated
``pNNNNNN.psv`` per ICU stay, one row per ICU hour, ``NaN`` = not measured in that hour
(no measurement is sent for it).

Column meanings (challenge description, Reyna et al., Crit Care Med 2020):

- ``ICULOS`` is the ICU length of stay in hours: the row with ``ICULOS = k`` summarises
  hour ``(k-1, k]`` after ICU admission. Its event time is the *end* of that hour,
  ``anchor + k h``: a value aggregated over an hour is only known when the hour is over,
  so the replay never shows the monitor data before it could exist. The anchor is the
  ICU admission (``ICULOS = 0``) and carries the Admission event.
- Every column is LOINC-coded (the first LOINC code of its quantity in Vigil's table).
- ``SBP``/``MAP``/``DBP`` do not say whether they come from an arterial line or a cuff,
  so they get the method-less LOINC codes 8480-6/8478-0/8462-4, which Vigil's code table
  maps to ``nbp_*``; an arterial quantity would claim more than the data says.
- ``FiO2`` is a fraction (0.21-1.0): sent with unit ``1`` and converted to %.
- ``Lactate`` is documented as mg/dL but its values (median about 1.8) are mmol/L, and
  ``Magnesium`` is documented as mmol/dL but its values (about 2) are mg/dL: the replay
  uses the units the values are in.
- ``SaO2`` is the blood-gas saturation (LOINC 2708-6, quantity ``sao2`` on labs), not a
  bedside SpO2.
- ``Gender`` 0 = female, 1 = male; ``Unit1``/``Unit2`` = 1 for MICU/SICU;
  ``HospAdmTime`` (hours from hospital to ICU admission) is not replayed.
- ``SepsisLabel`` (1 from 6 h before clinical onset) becomes one OutcomeLabel per row, each
  timed at its row (``observed_at``: the hour it describes) but *published only after the
  patient's last row* (``received_at`` = the last row's time): the label needs the
  clinical onset, which is known in hindsight only, so a monitor must never see it while
  the patient is in the unit. A Discharge at the last row's time follows the labels, so
  a consumer knows the patient's labels are complete (the risk agent joins them then).
  Labels are the one exception to the event-time order of the records.
"""

from __future__ import annotations

import bisect
import math
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from types import MappingProxyType

from schemas.codes import QUANTITIES, CodeSystem, Quantity
from schemas.common import SourceInfo
from schemas.context import Admission, Discharge, OutcomeLabel
from schemas.observations import LabResults, Measurement, VitalSigns
from schemas.units import normalise
from services.ingest import Outbound
from services.replay.common import Skips, context, observation

ADAPTER = "replay"
DEVICE = "physionet2019"

# column -> (quantity, unit as the data gives it); vitals first, then laboratory columns.
VITAL_COLUMNS: Mapping[str, tuple[Quantity, str]] = MappingProxyType(
    {
        "HR": (Quantity.HEART_RATE, "/min"),
        "O2Sat": (Quantity.SPO2, "%"),
        "Temp": (Quantity.TEMPERATURE, "Cel"),
        "SBP": (Quantity.NBP_SYS, "mm[Hg]"),
        "MAP": (Quantity.NBP_MEAN, "mm[Hg]"),
        "DBP": (Quantity.NBP_DIA, "mm[Hg]"),
        "Resp": (Quantity.RESP_RATE, "/min"),
        "EtCO2": (Quantity.ETCO2, "mm[Hg]"),
    }
)
LAB_COLUMNS: Mapping[str, tuple[Quantity, str]] = MappingProxyType(
    {
        "BaseExcess": (Quantity.BASE_EXCESS, "mmol/L"),
        "HCO3": (Quantity.BICARBONATE, "mmol/L"),
        "FiO2": (Quantity.FIO2, "1"),
        "pH": (Quantity.PH, "[pH]"),
        "PaCO2": (Quantity.PACO2, "mm[Hg]"),
        "SaO2": (Quantity.SAO2, "%"),
        "AST": (Quantity.AST, "U/L"),
        "BUN": (Quantity.UREA_NITROGEN, "mg/dL"),
        "Alkalinephos": (Quantity.ALKALINE_PHOSPHATASE, "U/L"),
        "Calcium": (Quantity.CALCIUM, "mg/dL"),
        "Chloride": (Quantity.CHLORIDE, "mmol/L"),
        "Creatinine": (Quantity.CREATININE, "mg/dL"),
        "Bilirubin_direct": (Quantity.BILIRUBIN_DIRECT, "mg/dL"),
        "Glucose": (Quantity.GLUCOSE, "mg/dL"),
        "Lactate": (Quantity.LACTATE, "mmol/L"),
        "Magnesium": (Quantity.MAGNESIUM, "mg/dL"),
        "Phosphate": (Quantity.PHOSPHATE, "mg/dL"),
        "Potassium": (Quantity.POTASSIUM, "mmol/L"),
        "Bilirubin_total": (Quantity.BILIRUBIN_TOTAL, "mg/dL"),
        "TroponinI": (Quantity.TROPONIN_I, "ng/mL"),
        "Hct": (Quantity.HEMATOCRIT, "%"),
        "Hgb": (Quantity.HEMOGLOBIN, "g/dL"),
        "PTT": (Quantity.PTT, "s"),
        "WBC": (Quantity.WBC, "10*3/uL"),
        "Fibrinogen": (Quantity.FIBRINOGEN, "mg/dL"),
        "Platelets": (Quantity.PLATELETS, "10*3/uL"),
    }
)


@dataclass(frozen=True)
class PatientFile:
    """One patient's ``.psv`` text, read whole (a few kB) so the archive is read once."""

    patient_id: str  # file stem, e.g. p000001
    text: bytes


PATIENT_FILE = re.compile(r"p\d+")
"""A PhysioNet 2019 patient file's name without ``.psv``: ``p000001`` (set B: ``p100001``)."""


def patient_files(
    path: Path, *, limit: int | None = None, only: frozenset[str] | None = None
) -> list[PatientFile]:
    """The selected patients of ``path``, sorted by id: one ``.psv`` file, a folder (its
    subfolders too: the challenge's ``training/training_setA`` and ``training_setB``), or
    an archive as PhysioNet distributes it (``.zip``, ``.tar.gz``, any tar).

    An archive is read once, nothing extracted to disk; only selected members are kept:
    those in ``only`` and, with ``limit``, the ``limit`` smallest ids. Only files named
    like a patient (``p`` and digits) count (not macOS's ``._p000001.psv``); an id found
    twice is an error, not a silent choice between two files.
    """
    chosen: dict[str, bytes] = {}
    seen: set[str] = set()
    smallest: list[str] = []  # sorted ids kept so far, when ``limit`` is set

    def offer(name: Path, read: Callable[[], bytes]) -> None:
        pid = name.stem
        if name.suffix != ".psv" or not PATIENT_FILE.fullmatch(pid) or "__MACOSX" in name.parts:
            return
        if pid in seen:
            raise ValueError(f"{path}: patient {pid} is there twice ({name})")
        seen.add(pid)
        if only is not None and pid not in only:
            return
        if limit is not None:
            if len(smallest) >= limit and pid >= smallest[-1]:
                return
            bisect.insort(smallest, pid)
            if len(smallest) > limit:
                del chosen[smallest.pop()]
        chosen[pid] = read()

    try:
        if path.is_dir():
            for file in sorted(path.rglob("*.psv")):
                offer(file.relative_to(path), file.read_bytes)
        elif path.suffix == ".psv":
            offer(Path(path.name), path.read_bytes)
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as zipped:
                for info in zipped.infolist():
                    if not info.is_dir():
                        offer(Path(info.filename), partial(zipped.read, info))
        else:
            with tarfile.open(path, "r|*") as archive:
                for member in archive:
                    handle = archive.extractfile(member) if member.isfile() else None
                    if handle is not None:
                        offer(Path(member.name), handle.read)
    except (tarfile.TarError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .zip or tar archive ({exc})") from exc
    return [PatientFile(pid, chosen[pid]) for pid in sorted(chosen)]


def read_patient(
    file: PatientFile, anchor: datetime, skips: Skips | None = None
) -> Iterator[Outbound]:
    """One patient's records in event-time order: Admission at the anchor, then per hour
    vitals, labs and the sepsis label (see the module docstring for the mapping)."""
    skips = skips if skips is not None else Skips()
    pid = file.patient_id
    source = SourceInfo(adapter=ADAPTER, device_id=DEVICE)
    lines = file.text.decode().splitlines()
    if not lines:
        skips.add("physionet_empty_file")
        return
    header = lines[0].strip().split("|")
    col = {name: i for i, name in enumerate(header)}
    admitted = False
    labels: list[tuple[datetime, SourceInfo, bool]] = []
    last_at: datetime | None = None
    for number, line in enumerate(lines[1:], start=2):
        cells = line.strip().split("|")
        if len(cells) != len(header):
            skips.add("physionet_bad_row_length")
            continue
        try:
            values = [float(c) for c in cells]
            iculos = int(values[col["ICULOS"]])
        except (ValueError, KeyError):
            skips.add("physionet_unparseable_row")
            continue
        if not admitted:
            admitted = True
            yield context(_admission(pid, values, col, anchor, source))
        at = anchor + timedelta(hours=iculos)
        last_at = at
        row_source = source.model_copy(update={"message_control_id": f"{pid}:{number - 1}"})
        vitals = _measurements(VITAL_COLUMNS, values, col, at)
        if vitals:
            yield Outbound("vitals", pid, observation(VitalSigns, pid, vitals, source=row_source))
        labs = _measurements(LAB_COLUMNS, values, col, at)
        if labs:
            yield Outbound("labs", pid, observation(LabResults, pid, labs, source=row_source))
        label = _get(values, col, "SepsisLabel")
        if label is not None:
            labels.append((at, row_source, label >= 1))
    if last_at is None:
        return
    for at, row_source, positive in labels:  # revealed only now, after the last row
        yield context(
            OutcomeLabel(
                patient_id=pid,
                observed_at=at,
                received_at=last_at,
                source=row_source,
                outcome="sepsis",
                label=positive,
                label_source="physionet2019",
            )
        )
    yield context(
        Discharge(patient_id=pid, observed_at=last_at, received_at=last_at, source=source)
    )


def _get(values: list[float], col: Mapping[str, int], name: str) -> float | None:
    i = col.get(name)
    if i is None or math.isnan(values[i]):
        return None
    return values[i]


def _measurements(
    columns: Mapping[str, tuple[Quantity, str]],
    values: list[float],
    col: Mapping[str, int],
    at: datetime,
) -> list[Measurement]:
    found = []
    for name, (quantity, unit) in columns.items():
        value = _get(values, col, name)
        if value is not None:
            found.append(
                normalise(
                    CodeSystem.LOINC,
                    QUANTITIES[quantity].loinc[0],
                    at,
                    value=value,
                    unit=unit,
                    quantity=quantity,
                )
            )
    return found


def _admission(
    pid: str, values: list[float], col: Mapping[str, int], anchor: datetime, source: SourceInfo
) -> Admission:
    gender = _get(values, col, "Gender")
    unit = (
        "MICU"
        if _get(values, col, "Unit1") == 1
        else "SICU"
        if _get(values, col, "Unit2") == 1
        else None
    )
    return Admission(
        patient_id=pid,
        observed_at=anchor,
        received_at=anchor,
        source=source,
        care_unit=unit,
        age_years=_get(values, col, "Age"),
        sex="female" if gender == 0 else "male" if gender == 1 else "unknown",
    )


def read_source(
    path: Path,
    anchor: datetime,
    *,
    limit: int | None = None,
    only: frozenset[str] | None = None,
    skips: Skips | None = None,
) -> list[Iterator[Outbound]]:
    """One lazy stream per selected patient (merge them with ``merge_patients``)."""
    return [read_patient(f, anchor, skips) for f in patient_files(path, limit=limit, only=only)]
