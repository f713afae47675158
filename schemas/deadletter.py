"""The deadletter topic: input that could not be parsed or validated, never dropped."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from schemas.common import Contract, UtcDatetime


class DeadLetter(Contract):
    r"""Original bytes plus why they were refused; key = source.

    ``original`` holds the raw bytes in Python and travels base64url-encoded
    (RFC 4648 section 5) in JSON.

    >>> from datetime import UTC, datetime
    >>> letter = DeadLetter(source="hl7", reason="unparseable", detail="no MSH segment",
    ...     original=b"\x0bPID|1\x1c\r", received_at=datetime(2026, 1, 1, tzinfo=UTC))
    >>> letter.model_dump_json()[:59]
    '{"schema_version":1,"source":"hl7","reason":"unparseable","'
    >>> DeadLetter.model_validate_json(letter.model_dump_json()).original
    b'\x0bPID|1\x1c\r'
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )

    schema_version: Literal[1] = 1
    source: str = Field(max_length=64, description="Who refused it, e.g. hl7, worker.vitals")
    reason: str = Field(max_length=64, description="Short machine-readable reason")
    detail: str = Field(max_length=4096, description="The error, human-readable")
    original: bytes = Field(description="The original bytes; base64url in JSON")
    original_topic: str | None = None
    original_partition: int | None = None
    original_offset: int | None = None
    original_key: str | None = None
    received_at: UtcDatetime
