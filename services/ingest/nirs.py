"""NIRS line protocol v1: cerebral oximetry (rSO2 left/right and baselines, in %).

``NIRS v=1 patient=<mrn> device=<id> time=<iso|@ms> [left=] [right=] [baseline_left=]
[baseline_right=] [signal=|signal_left=|signal_right= good|poor] [bed=] [care_unit=] [id=]``
(docs/protocols.md). ``signal=poor`` marks the rSO2 values of that side artefact.

>>> from datetime import UTC, datetime
>>> rec = parse_nirs_line(
...     b"NIRS v=1 patient=MRN123 device=INVOS-07 time=2026-11-22T08:00:01+01:00"
...     b" left=64 right=- baseline_left=70 id=123\\n",
...     received_at=datetime(2026, 11, 22, 7, 0, 2, tzinfo=UTC),
... )
>>> [(m.quantity.value, m.value, m.unit) for m in rec.outbound.payload.measurements]
[('rso2_left', 64.0, '%'), ('rso2_baseline_left', 70.0, '%')]
>>> rec.sender_id, rec.outbound.topic, rec.outbound.key
('123', 'nirs', 'MRN123')
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Final

from schemas.codes import Quantity
from schemas.observations import Measurement, NirsSample
from services.ingest.linefmt import (
    NO_VALUE,
    LineRecord,
    carrying_sender_id,
    numeric_measurement,
    observation_record,
    read_header,
    read_sender_id,
    refuse,
    require_aware,
    tokenize,
)

RECORD_TYPE: Final = "NIRS"

VALUE_KEYS: Final = {
    "left": Quantity.RSO2_LEFT,
    "right": Quantity.RSO2_RIGHT,
    "baseline_left": Quantity.RSO2_BASELINE_LEFT,
    "baseline_right": Quantity.RSO2_BASELINE_RIGHT,
}
"""Line key -> quantity; every value is rSO2 in % (a unit suffix is converted)."""

SIGNAL_KEYS: Final = ("signal", "signal_left", "signal_right")
SIGNAL_VALUES: Final = ("good", "poor")
FIELD_KEYS: Final = (*VALUE_KEYS, *SIGNAL_KEYS)


def _signal_poor(tokens: dict[str, str], key: str) -> bool:
    value = tokens.get(key, NO_VALUE).lower()
    if value != NO_VALUE and value not in SIGNAL_VALUES:
        raise refuse("invalid_message", f"{key} must be good or poor, got {value[:20]!r}")
    return value == "poor"


def parse_nirs_line(
    line: bytes, *, received_at: datetime, site_tz: tzinfo | None = None
) -> LineRecord:
    """One NIRS line as a ``nirs`` record, or :class:`InputRefusedError` saying why not."""
    received_at = require_aware(received_at)
    with carrying_sender_id(None):
        tokens = tokenize(line, RECORD_TYPE)
        sender_id = read_sender_id(tokens)
    with carrying_sender_id(sender_id):
        header = read_header(
            tokens, RECORD_TYPE, FIELD_KEYS, received_at=received_at, site_tz=site_tz
        )
        both_poor = _signal_poor(tokens, "signal")
        poor = {
            "left": both_poor or _signal_poor(tokens, "signal_left"),
            "right": both_poor or _signal_poor(tokens, "signal_right"),
        }
        measurements: list[Measurement] = []
        for key, quantity in VALUE_KEYS.items():
            if key in tokens:
                m = numeric_measurement(
                    key, tokens[key], quantity, header, artefact=poor.get(key, False)
                )
                if m is not None:
                    measurements.append(m)
        if not measurements:
            raise refuse(
                "invalid_message",
                "no measurement: give left, right, baseline_left or baseline_right",
            )
        return observation_record(
            NirsSample, header, sender_id, measurements, received_at=received_at
        )
