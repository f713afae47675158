"""The deadletter topic: input that could not be parsed or validated, never dropped."""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field

from schemas.common import Contract, UtcDatetime

ORIGINAL_MAX_BYTES = 512 * 1024
"""Kept bytes per dead letter: base64 grows them by a third; Kafka's default limit is 1 MiB."""


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
    original: bytes = Field(
        max_length=ORIGINAL_MAX_BYTES,
        description="The original bytes (the first 512 KiB if larger); base64url in JSON",
    )
    original_size: int | None = Field(default=None, ge=0, description="Size of the whole input")
    original_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    original_topic: str | None = None
    original_partition: int | None = None
    original_offset: int | None = None
    original_key: str | None = None
    received_at: UtcDatetime

    @classmethod
    def of(cls, original: bytes, *, source: str, reason: str, detail: str, **where: Any) -> Self:
        """A dead letter for ``original``, truncated to fit a Kafka record if need be.

        >>> from datetime import UTC, datetime
        >>> big = DeadLetter.of(b"x" * 600_000, source="hl7", reason="too_large", detail="",
        ...     received_at=datetime(2026, 1, 1, tzinfo=UTC))
        >>> len(big.original), big.original_size, big.original_sha256[:8]
        (524288, 600000, '34e95fe8')
        """
        return cls(
            source=source,
            reason=reason,
            detail=detail[:4096],
            original=original[:ORIGINAL_MAX_BYTES],
            original_size=len(original),
            original_sha256=hashlib.sha256(original).hexdigest(),
            **where,
        )
