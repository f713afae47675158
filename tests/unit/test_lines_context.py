"""Context JSON lines (services/ingest/context_lines.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.context import ContextEvent
from services.ingest import InputRefusedError
from services.ingest.context_lines import EVENT_TYPES
from services.ingest.linefmt import LineRecord, LineRefusedError
from services.ingest.lines import parse_context_line

RECEIVED = datetime(2026, 11, 22, 8, 0, 5, tzinfo=UTC)
AT = "2026-11-22T07:30:00Z"
AT_UTC = datetime(2026, 11, 22, 7, 30, tzinfo=UTC)

EXAMPLES: dict[str, dict[str, Any]] = {
    "admission": {"bed": "ICU1-07", "care_unit": "ICU1", "site": "North", "age_years": 67.0,
                  "sex": "female"},
    "transfer": {"bed": "ICU2-01", "care_unit": "ICU2", "site": "North"},
    "discharge": {"disposition": "ward"},
    "weight": {"weight_kg": 82.5},
    "infusion": {"drug": "norepinephrine", "rate": 0.12, "rate_unit": "ug/kg/min"},
    "drug_dose": {"drug": "furosemide", "dose_mg": 80.0},
    "gcs": {"total": 13, "eye": 3, "verbal": 4, "motor": 6},
    "urine_output": {"volume_ml": 35.0, "period_start": "2026-11-22T06:30:00+00:00"},
    "fluid": {"direction": "in", "volume_ml": 500.0, "route": "iv"},
    "renal_venous_doppler": {"pattern": "biphasic_discontinuous", "ivc_diameter_cm": 2.3},
    "capillary_refill": {"seconds": 4.5},
    "outcome_label": {"outcome": "sepsis", "label": True, "label_source": "physionet2019"},
}  # fmt: skip


def line(event_kind: str, /, **extra: Any) -> bytes:
    """A JSON line of ``event_kind`` from EXAMPLES; ``extra`` overrides, ``...`` removes."""
    obj = {"kind": event_kind, "patient_id": "MRN123", "observed_at": AT}
    obj.update(EXAMPLES.get(event_kind, {}))
    obj.update(extra)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


def parse(data: bytes, **kwargs: Any) -> LineRecord:
    return parse_context_line(data, received_at=RECEIVED, **kwargs)


def refused(data: bytes, reason: str, match: str | None = None, **kwargs: Any) -> InputRefusedError:
    with pytest.raises(InputRefusedError, match=match) as info:
        parse(data, **kwargs)
    assert info.value.reason == reason, str(info.value)
    return info.value


def test_examples_cover_every_context_kind() -> None:
    assert set(EXAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_every_kind_round_trips_from_a_json_line(kind: str) -> None:
    rec = parse(line(kind, id=f"{kind}-1", device="PDMS"))
    assert (rec.outbound.topic, rec.outbound.key, rec.patient_id) == ("context", "MRN123", "MRN123")
    assert rec.sender_id == f"{kind}-1"
    assert isinstance(rec.outbound.payload, ContextEvent)
    event = rec.outbound.payload.root
    assert event.kind == kind
    dumped = event.model_dump(mode="json", exclude={"received_at", "source", "schema_version"})
    expected = {"kind": kind, "patient_id": "MRN123", "observed_at": "2026-11-22T07:30:00Z"}
    expected.update(EXAMPLES[kind])
    if "period_start" in expected:
        expected["period_start"] = "2026-11-22T06:30:00Z"
    assert dumped == expected
    assert (event.received_at, event.schema_version) == (RECEIVED, 1)
    assert event.source.model_dump() == {
        "adapter": "context",
        "device_id": "PDMS",
        "message_control_id": f"{kind}-1",
    }
    again = ContextEvent.model_validate_json(rec.outbound.value())
    assert again == rec.outbound.payload


def test_id_may_be_an_int_and_device_is_optional() -> None:
    rec = parse(line("weight", id=42))
    assert rec.sender_id == "42"
    assert rec.dedup_key == ("MRN123", None, "42")
    assert parse(line("weight")).sender_id is None
    assert parse(line("weight")).dedup_key is None
    refused(line("weight", id=True), "invalid_message", "id must be")
    refused(line("weight", id="a b"), "invalid_message", "id must be")
    refused(line("weight", id=-1), "invalid_message", "id must be")


def test_adapter_fields_are_validated_then_filled_by_the_adapter() -> None:
    given = line(
        "weight",
        received_at="2026-11-22T07:59:00+01:00",
        schema_version=1,
        source={"adapter": "hl7", "device_id": "EHR", "message_control_id": "M1"},
    )
    event = parse(given).outbound.payload.root  # type: ignore[attr-defined]
    assert event.received_at == RECEIVED
    assert event.source.model_dump() == {
        "adapter": "context",
        "device_id": "EHR",
        "message_control_id": "M1",
    }
    refused(line("weight", schema_version=2), "invalid_message", "schema_version")
    refused(line("weight", received_at="yesterday"), "bad_timestamp")
    refused(line("weight", source={"adapter": ""}), "invalid_message", "source.adapter")
    refused(line("weight", source={"adapter": "x", "oops": 1}), "invalid_message", "oops")


def test_pydantic_errors_become_concise_reasons() -> None:
    err = refused(line("weight", weight_kg=-3, id="w1"), "invalid_message")
    assert str(err) == "weight_kg: Input should be greater than 0"
    assert isinstance(err, LineRefusedError)
    assert err.sender_id == "w1"
    err = refused(line("gcs", total=16, eye=0), "invalid_message")
    assert str(err) == (
        "total: Input should be less than or equal to 15; eye: Input should be greater than or"
        " equal to 1"
    )
    err = refused(line("infusion", drug="coffee"), "invalid_message", "^drug: Input should be")
    assert "\n" not in str(err)
    refused(line("weight", weight_kg=...), "invalid_message", "^weight_kg: Field required$")


def test_kind_missing_or_unknown() -> None:
    refused(
        line("weight", kind=...), "invalid_message", "^kind is missing: one of admission, transfer"
    )
    refused(line("weight", kind="wieght"), "invalid_message", "kind 'wieght' is unknown: one of")
    refused(line("weight", kind=3), "invalid_message", "kind '3' is unknown")


def test_unknown_field_is_refused_with_its_name() -> None:
    err = refused(line("weight", weight_lbs=180), "unknown_field", "'weight_lbs'")
    assert str(err).endswith("(did you mean 'weight_kg'?)")
    err = refused(line("weight", zzz=1), "unknown_field")
    assert str(err).endswith("(known: patient_id, observed_at, kind, weight_kg, id, device)")
    refused(line("weight", period_start=AT), "unknown_field", "'period_start'")


def test_patient_identity() -> None:
    refused(line("weight", patient_id=...), "no_patient_identity")
    refused(line("weight", patient_id=""), "no_patient_identity")
    refused(line("weight", patient_id=None), "no_patient_identity")
    refused(line("weight", patient_id="MRN 1"), "invalid_message", "patient id")
    refused(line("weight", patient_id=123), "invalid_message", "patient id")


def test_times() -> None:
    refused(line("weight", observed_at=...), "bad_timestamp", "observed_at is required")
    refused(line("weight", observed_at="2026-11-22T08:30:00"), "bad_timestamp", "no UTC offset")
    refused(line("weight", observed_at=1795330800), "bad_timestamp", "must be a string")
    rec = parse(line("weight", observed_at="2026-11-22T08:30:00"), site_tz=ZoneInfo("Europe/Paris"))
    assert rec.outbound.payload.root.observed_at == AT_UTC  # type: ignore[attr-defined]
    rec = parse(line("weight", observed_at="2026-11-22T09:30:00+02:00"))
    assert rec.outbound.payload.root.observed_at == AT_UTC  # type: ignore[attr-defined]
    refused(line("weight", observed_at="2026-11-22T09:30:00Z"), "bad_timestamp", "after receipt")
    refused(
        line("urine_output", period_start="2026-11-22T07:45:00Z"),
        "bad_timestamp",
        "period_start is after observed_at",
    )
    rec = parse(line("urine_output", period_start=None))
    assert rec.outbound.payload.root.period_start is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"[1, 2]", "one JSON object"),
        (b'"weight"', "one JSON object"),
        (b'{"kind": "weight", "kind": "gcs"}', "'kind' given twice"),
        (b'{"kind": "weight", "weight_kg": NaN}', "NaN is not a number"),
        (b'{"kind": "weight", "weight_kg": Infinity}', "not a number"),
        (b"[" * 3000, "not JSON"),
        (b'{"kind": "weight"}\n{"kind": "gcs"}', "control character"),
        (b'{"kind": "w\xffeight"}', "not UTF-8"),
    ],
)
def test_json_syntax_errors(data: bytes, match: str) -> None:
    refused(data, "line_parse_error", match)


def test_crlf_and_whitespace_tolerated() -> None:
    rec = parse(b"  " + line("weight") + b"  \r\n")
    assert rec.outbound.payload.root.weight_kg == 82.5  # type: ignore[attr-defined]
