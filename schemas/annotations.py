"""The groundtruth topic: what a simulator scenario (or a dataset label) did, in event time.

Alerts are scored against these annotations (issue 7); they are never read by the
rules themselves.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.common import Contract, PatientId, UtcDatetime


class GroundTruth(Contract):
    """One scripted condition of one patient, from ``onset`` to ``end`` (event time)."""

    schema_version: Literal[1] = 1
    run_id: str = Field(min_length=1, max_length=64, description="Simulation or replay run")
    patient_id: PatientId
    bed: str | None = Field(default=None, max_length=32)
    scenario: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9_]+$",
        description="e.g. septic_shock, venous_congestion_aki, cerebral_desaturation",
    )
    onset: UtcDatetime = Field(description="Event time the condition starts")
    end: UtcDatetime | None = Field(default=None, description="Event time it is over (null: open)")
    organs: tuple[str, ...] = Field(
        default=(), max_length=8, description="Organ systems the condition should affect"
    )
    description: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _check_interval(self) -> Self:
        if self.end is not None and self.end < self.onset:
            raise ValueError("end before onset")
        return self
