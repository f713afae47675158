"""Ingestion: adapters that turn what a sender sends into validated, coded topic records.

Every adapter has a pure core (bytes in, :class:`Outbound` records out, or
:class:`InputRefusedError` with a reason) and a thin I/O shell that publishes the records,
waits for Kafka's acknowledgement and only then tells the sender it was saved.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class Outbound:
    """One record to publish: the topic's base name in the registry, its key, its payload."""

    topic: str  # base name: vitals, nirs, crrt, labs, context, groundtruth
    key: str  # patient id (the co-partitioning key)
    payload: BaseModel

    def value(self) -> bytes:
        """The record value as it goes on the topic (the payload's JSON)."""
        return self.payload.model_dump_json().encode()


class InputRefusedError(ValueError):
    """Input that cannot become valid records: the sender gets a negative ack, the bytes a
    dead letter. ``reason`` is a short machine-readable code (``hl7_parse_error``,
    ``invalid_message``, ``unsupported_message_type``, ...), the message says why for people.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
