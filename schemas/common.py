"""Shared building blocks of the contracts: the base model and UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
"""Version of every payload on every topic; bumped on an incompatible change."""


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware timestamp, normalised to UTC. Naive datetimes are refused."""

PatientId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:@-]+$",
        description="Stable patient identifier (MRN or visit id); the Kafka key",
    ),
]


class Contract(BaseModel):
    """Base of every topic payload: immutable, unknown fields and NaN/infinity refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class SourceInfo(Contract):
    """Where a message came from."""

    adapter: str = Field(
        min_length=1,
        max_length=64,
        description="Adapter that published it: hl7, nirs, crrt, context, replay, simulator",
    )
    device_id: str | None = Field(
        default=None, max_length=128, description="Sending device or system, if known"
    )
    message_control_id: str | None = Field(
        default=None,
        max_length=64,
        description="Id of the original message (e.g. HL7 MSH-10), for de-duplication",
    )
