"""The deadletter topic: input that could not be parsed or validated, never dropped."""

from __future__ import annotations

from typing import Literal

from pydantic import Base64Bytes, Field

from schemas.common import Contract, UtcDatetime


class DeadLetter(Contract):
    """Original bytes plus why they were refused; key = source."""

    schema_version: Literal[1] = 1
    source: str = Field(max_length=64, description="Who refused it, e.g. hl7, worker.vitals")
    reason: str = Field(max_length=64, description="Short machine-readable reason")
    detail: str = Field(max_length=4096, description="The error, human-readable")
    original: Base64Bytes = Field(description="The original bytes, base64 in JSON")
    original_topic: str | None = None
    original_partition: int | None = None
    original_offset: int | None = None
    original_key: str | None = None
    received_at: UtcDatetime
