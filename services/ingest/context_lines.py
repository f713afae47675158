"""Context JSON lines v1: one JSON object per line, a :class:`ContextEvent` told apart by kind.

The object has the event's fields (schemas/context.py) without ``received_at``,
``source`` and ``schema_version``, which the adapter fills (when given they must be
valid; ``received_at`` is always the adapter's). Optional extras: ``"id"`` (sender id,
string or non-negative int) and ``"device"`` (sending system). Times are ISO 8601 with
offset or ``"@<epoch ms>"``, as in the key=value protocols.

>>> from datetime import UTC, datetime
>>> rec = parse_context_line(
...     b'{"kind": "weight", "patient_id": "MRN123", "observed_at": "2026-11-22T07:30Z",'
...     b' "weight_kg": 82.5, "id": 7, "device": "PDMS"}',
...     received_at=datetime(2026, 11, 22, 8, 0, tzinfo=UTC),
... )
>>> event = rec.outbound.payload.root
>>> event.kind, event.weight_kg, event.source.adapter, event.source.message_control_id
('weight', 82.5, 'context', '7')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any, Final, get_args

from pydantic import BaseModel, ValidationError

from schemas.common import SourceInfo
from schemas.context import ContextEvent, PatientContext
from services.ingest import Outbound
from services.ingest.linefmt import (
    LineRecord,
    carrying_sender_id,
    check_time_window,
    decode_line,
    describe_validation_error,
    did_you_mean,
    parse_patient_id,
    parse_sender_id,
    parse_text,
    parse_time,
    refuse,
    require_aware,
)

EVENT_TYPES: Final[Mapping[str, type[BaseModel]]] = {
    model.model_fields["kind"].default: model for model in get_args(get_args(PatientContext)[0])
}
"""kind -> event model."""

EXTRA_KEYS: Final = ("id", "device")
_ADAPTER_KEYS: Final = ("received_at", "source", "schema_version")
_TIME_KEYS: Final = ("observed_at", "period_start")


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"key {key[:40]!r} given twice")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _load_object(line: bytes) -> dict[str, Any]:
    text = decode_line(line)
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKeyError as exc:
        raise refuse("line_parse_error", str(exc)) from None
    except json.JSONDecodeError as exc:
        raise refuse("line_parse_error", f"not JSON: {exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise refuse("line_parse_error", f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise refuse("line_parse_error", "a context line is one JSON object ({...})")
    return obj


def _time(obj: dict[str, Any], key: str, site_tz: tzinfo | None) -> datetime:
    value = obj[key]
    if not isinstance(value, str):
        raise refuse("bad_timestamp", f"{key} must be a string (ISO 8601 or @epoch-ms)")
    return parse_time(value, site_tz=site_tz)


def parse_context_line(
    line: bytes, *, received_at: datetime, site_tz: tzinfo | None = None
) -> LineRecord:
    """One JSON line as a ``context`` record, or :class:`InputRefusedError` saying why not."""
    received_at = require_aware(received_at)
    with carrying_sender_id(None):
        obj = _load_object(line)
        sender_id = None if obj.get("id") is None else parse_sender_id(obj["id"])
    with carrying_sender_id(sender_id):
        kind = obj.get("kind")
        model = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
        if model is None:
            what = "kind is missing" if kind is None else f"kind {str(kind)[:30]!r} is unknown"
            raise refuse("invalid_message", f"{what}: one of " + ", ".join(EVENT_TYPES))
        unknown = [k for k in obj if k not in model.model_fields and k not in EXTRA_KEYS]
        if unknown:
            known = (*(k for k in model.model_fields if k not in _ADAPTER_KEYS), *EXTRA_KEYS)
            raise refuse(
                "unknown_field",
                f"unknown field {unknown[0][:40]!r} for kind {kind}"
                + did_you_mean(unknown[0], known),
            )
        patient_id = parse_patient_id(obj.get("patient_id"))
        given_source = None
        if obj.get("source") is not None:
            try:
                given_source = SourceInfo.model_validate(obj["source"])
            except ValidationError as exc:
                raise refuse(
                    "invalid_message", "source." + describe_validation_error(exc)
                ) from None
        if obj.get("received_at") is not None:
            _time(obj, "received_at", site_tz)  # validated, then replaced by ours
        if obj.get("observed_at") is None:
            raise refuse("bad_timestamp", "observed_at is required (ISO 8601 with offset)")
        fields = dict(obj)
        for key in _TIME_KEYS:
            if obj.get(key) is not None:
                fields[key] = _time(obj, key, site_tz)
                check_time_window(fields[key], received_at, key)
        if obj.get("period_start") is not None and fields["period_start"] > fields["observed_at"]:
            raise refuse("bad_timestamp", "period_start is after observed_at")
        device = obj.get("device")
        device_id = (
            parse_text("device", device, 128)
            if device is not None
            else (given_source.device_id if given_source else None)
        )
        if sender_id is None and given_source is not None:
            sender_id = given_source.message_control_id
        for key in EXTRA_KEYS:
            fields.pop(key, None)
        fields["received_at"] = received_at
        fields["source"] = SourceInfo(
            adapter="context", device_id=device_id, message_control_id=sender_id
        )
        try:
            payload = ContextEvent.model_validate(fields)
        except ValidationError as exc:
            raise refuse("invalid_message", describe_validation_error(exc, skip_loc=1)) from None
    return LineRecord(
        outbound=Outbound(topic="context", key=patient_id, payload=payload),
        sender_id=sender_id,
        patient_id=patient_id,
    )
