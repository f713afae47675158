"""MIMIC-II Waveform DB 1-minute numerics (record s00001) to vitals.

Source: the numerics record ``3975656n`` of MIMIC-II waveform subject ``s00001``, exported
as CSV with one row per minute. The file has no absolute time: its ``minute`` column counts
minutes from the start of the record (0-based), as a WFDB sample index at 1/min does. Row
``m`` is the monitor's value at ``anchor + m min`` (a sample at that instant, not an
interval summary); the anchor is the record start and carries an Admission event.

Values: ``0`` means "not measured" (e.g. no arterial line connected) and an empty cell
means no value; neither becomes a measurement. Everything else is sent, plausibility
checked (an implausible reading is kept, flagged artefact).

Codes (IEEE 11073-10101, CLINICAL.md "Codes"): HR 147842; ABP 150037/150038/150039
(MDC_PRESS_BLD_ART_ABP_*: the monitor's "ABP" label); PULSE 149530
(MDC_PULS_OXIM_PULS_RATE: it appears with SpO2, so it is the oximeter's pulse); RESP
151562; SpO2 150456; NBP 150021/150022/150023.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from schemas.codes import CodeSystem, Quantity
from schemas.common import SourceInfo
from schemas.context import Admission
from schemas.observations import Measurement, VitalSigns
from schemas.units import normalise
from services.ingest import Outbound
from services.replay.common import Skips, context, observation

# column -> (quantity, MDC term code, reference id, unit)
COLUMNS: Mapping[str, tuple[Quantity, str, str, str]] = MappingProxyType(
    {
        "HR_bpm": (Quantity.HEART_RATE, "147842", "MDC_ECG_HEART_RATE", "/min"),
        "ABPSys_mmHg": (Quantity.ABP_SYS, "150037", "MDC_PRESS_BLD_ART_ABP_SYS", "mm[Hg]"),
        "ABPDias_mmHg": (Quantity.ABP_DIA, "150038", "MDC_PRESS_BLD_ART_ABP_DIA", "mm[Hg]"),
        "ABPMean_mmHg": (Quantity.ABP_MEAN, "150039", "MDC_PRESS_BLD_ART_ABP_MEAN", "mm[Hg]"),
        "PULSE_bpm": (Quantity.PULSE_RATE, "149530", "MDC_PULS_OXIM_PULS_RATE", "/min"),
        "RESP_pm": (Quantity.RESP_RATE, "151562", "MDC_RESP_RATE", "/min"),
        "SpO2_pct": (Quantity.SPO2, "150456", "MDC_PULS_OXIM_SAT_O2", "%"),
        "NBPSys_mmHg": (Quantity.NBP_SYS, "150021", "MDC_PRESS_BLD_NONINV_SYS", "mm[Hg]"),
        "NBPDias_mmHg": (Quantity.NBP_DIA, "150022", "MDC_PRESS_BLD_NONINV_DIA", "mm[Hg]"),
        "NBPMean_mmHg": (Quantity.NBP_MEAN, "150023", "MDC_PRESS_BLD_NONINV_MEAN", "mm[Hg]"),
    }
)


def patient_id_of(path: Path) -> str:
    """``mimic2-`` + the subject part of the file name.

    >>> patient_id_of(Path("s00001_3975656n_numerics_1min.csv"))
    'mimic2-s00001'
    """
    return "mimic2-" + path.name.split("_", 1)[0]


def read_text(
    text: str, patient_id: str, anchor: datetime, skips: Skips | None = None
) -> Iterator[Outbound]:
    """Records of one numerics CSV in event-time order (Admission first)."""
    skips = skips if skips is not None else Skips()
    source = SourceInfo(adapter="replay", device_id="mimic2-numerics")
    yield context(
        Admission(patient_id=patient_id, observed_at=anchor, received_at=anchor, source=source)
    )
    for row in csv.DictReader(io.StringIO(text)):
        try:
            at = anchor + timedelta(minutes=int(row["minute"]))
        except (KeyError, TypeError, ValueError):
            skips.add("mimic2_bad_minute")
            continue
        measurements: list[Measurement] = []
        for column, (quantity, code, label, unit) in COLUMNS.items():
            cell = (row.get(column) or "").strip()
            if not cell:
                continue
            try:
                value = float(cell)
            except ValueError:
                skips.add("mimic2_unparseable_value")
                continue
            if value == 0:
                continue
            measurements.append(
                normalise(
                    CodeSystem.MDC,
                    code,
                    at,
                    value=value,
                    unit=unit,
                    code_label=label,
                    quantity=quantity,
                )
            )
        if measurements:
            row_source = source.model_copy(update={"message_control_id": row["minute"]})
            yield Outbound(
                "vitals",
                patient_id,
                observation(VitalSigns, patient_id, measurements, source=row_source),
            )


def read_source(
    path: Path, anchor: datetime, skips: Skips | None = None
) -> list[Iterator[Outbound]]:
    """The file's single patient stream (a list, like the other readers)."""
    return [read_text(path.read_text(), patient_id_of(path), anchor, skips)]
