"""CRRT line protocol v1: machine status (mode, flows, pressures, fluid removed, alarm).

``CRRT v=1 patient=<mrn> device=<id> time=<iso|@ms> [mode=] [blood_flow=] ... [alarm=]
[bed=] [care_unit=] [id=]`` (docs/protocols.md). Blood flow in mL/min, fluid rates in
mL/h, pressures in mm Hg, fluid removed in mL; a unit written after the number is
converted (``blood_flow=10.8L/h`` is refused: no such conversion; ``tmp=20kPa`` is not).

>>> from datetime import UTC, datetime
>>> rec = parse_crrt_line(
...     b"CRRT v=1 patient=MRN123 device=PrismaFlex-0231 time=2026-11-22T07:59:40Z"
...     b" mode=cvvhdf blood_flow=180 effluent_rate=2.05L/h alarm=none id=88",
...     received_at=datetime(2026, 11, 22, 8, 0, tzinfo=UTC),
... )
>>> [(m.quantity.value, m.value, m.value_text, m.unit) for m in rec.outbound.payload.measurements]
... # doctest: +NORMALIZE_WHITESPACE
[('crrt_mode', None, 'CVVHDF', '1'), ('crrt_blood_flow', 180.0, None, 'mL/min'),
 ('crrt_effluent_rate', 2050.0, None, 'mL/h'), ('crrt_machine_alarm', None, 'none', '1')]
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Final

from schemas.codes import Quantity
from schemas.observations import CrrtStatus, Measurement
from services.ingest.linefmt import (
    NO_VALUE,
    LineRecord,
    carrying_sender_id,
    numeric_measurement,
    observation_record,
    parse_text,
    read_header,
    read_sender_id,
    refuse,
    require_aware,
    text_measurement,
    tokenize,
)

RECORD_TYPE: Final = "CRRT"

THERAPY_MODES: Final = ("CVVH", "CVVHD", "CVVHDF", "SCUF", "TPE", "SLED")
MACHINE_STATES: Final = ("standby", "priming", "paused", "ended")
_MODES: Final = {m.lower(): m for m in (*THERAPY_MODES, *MACHINE_STATES)}

NUMERIC_KEYS: Final = {
    "blood_flow": Quantity.CRRT_BLOOD_FLOW,  # mL/min
    "dialysate_rate": Quantity.CRRT_DIALYSATE_RATE,  # mL/h
    "replacement_rate": Quantity.CRRT_REPLACEMENT_RATE,  # mL/h, pre + post filter
    "effluent_rate": Quantity.CRRT_EFFLUENT_RATE,  # mL/h
    "net_uf_rate": Quantity.CRRT_NET_UF_RATE,  # mL/h, patient fluid removal
    "access_pressure": Quantity.CRRT_ACCESS_PRESSURE,  # mm Hg
    "return_pressure": Quantity.CRRT_RETURN_PRESSURE,  # mm Hg
    "prefilter_pressure": Quantity.CRRT_PREFILTER_PRESSURE,  # mm Hg
    "effluent_pressure": Quantity.CRRT_EFFLUENT_PRESSURE,  # mm Hg
    "tmp": Quantity.CRRT_TMP,  # mm Hg, transmembrane pressure
    "filter_pressure_drop": Quantity.CRRT_FILTER_PRESSURE_DROP,  # mm Hg
    "fluid_removed": Quantity.CRRT_FLUID_REMOVED,  # mL, cumulative machine counter
}
"""Line key -> quantity (canonical units in schemas/codes.py)."""

FIELD_KEYS: Final = ("mode", *NUMERIC_KEYS, "alarm")
ALARM_TEXT_CHARS: Final = 256


def _mode(value: str) -> str:
    mode = _MODES.get(value.lower())
    if mode is None:
        raise refuse(
            "invalid_message",
            f"mode {value[:20]!r} is not one of " + ", ".join(_MODES.values()),
        )
    return mode


def _alarm(value: str) -> str:
    text = parse_text("alarm", value, ALARM_TEXT_CHARS)
    return "none" if text.lower() == "none" else text


def parse_crrt_line(
    line: bytes, *, received_at: datetime, site_tz: tzinfo | None = None
) -> LineRecord:
    """One CRRT line as a ``crrt`` record, or :class:`InputRefusedError` saying why not."""
    received_at = require_aware(received_at)
    with carrying_sender_id(None):
        tokens = tokenize(line, RECORD_TYPE)
        sender_id = read_sender_id(tokens)
    with carrying_sender_id(sender_id):
        header = read_header(
            tokens, RECORD_TYPE, FIELD_KEYS, received_at=received_at, site_tz=site_tz
        )
        measurements: list[Measurement] = []
        mode = tokens.get("mode", NO_VALUE)
        if mode != NO_VALUE:
            measurements.append(text_measurement(Quantity.CRRT_MODE, _mode(mode), header))
        for key, quantity in NUMERIC_KEYS.items():
            if key in tokens:
                m = numeric_measurement(key, tokens[key], quantity, header)
                if m is not None:
                    measurements.append(m)
        alarm = tokens.get("alarm", NO_VALUE)
        if alarm != NO_VALUE:
            measurements.append(
                text_measurement(Quantity.CRRT_MACHINE_ALARM, _alarm(alarm), header)
            )
        if not measurements:
            raise refuse("invalid_message", "no measurement: give at least one CRRT field")
        return observation_record(
            CrrtStatus, header, sender_id, measurements, received_at=received_at
        )
