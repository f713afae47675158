"""Derived topics: per-organ features and risk scores.

Missing or stale inputs are ``unknown`` with an age, never 0 (CLINICAL.md).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.common import Contract, PatientId, UtcDatetime


class Organ(StrEnum):
    """The organ systems Vigil follows (SOFA organs plus perfusion, congestion, brain)."""

    CARDIOVASCULAR = "cardiovascular"
    PERFUSION = "perfusion"
    RENAL = "renal"
    CONGESTION = "congestion"
    BRAIN = "brain"
    RESPIRATORY = "respiratory"
    COAGULATION = "coagulation"
    LIVER = "liver"
    CNS = "cns"


class FeatureValue(Contract):
    """One feature value with its unit and how old its newest input is."""

    value: float | None = Field(description="null = unknown")
    unit: str = Field(max_length=32)
    age_s: float | None = Field(default=None, ge=0, description="Age of newest input, seconds")


class OrganState(Contract):
    """State of one organ: a SOFA-style subscore where one exists."""

    status: Literal["normal", "impaired", "failing", "unknown"]
    subscore: int | None = Field(default=None, ge=0, le=4, description="null = unknown")
    age_s: float | None = Field(default=None, ge=0)
    reason: str | None = Field(default=None, max_length=256)


class FeatureSnapshot(Contract):
    """Per-organ rolling features of one patient at one event time; key = patient id."""

    schema_version: Literal[1] = 1
    patient_id: PatientId
    computed_at: UtcDatetime = Field(description="Event time the snapshot describes")
    features: dict[str, FeatureValue] = Field(description="e.g. map_median_1min_mmhg")
    organs: dict[Organ, OrganState]
    sofa_total: int | None = Field(default=None, ge=0, le=24, description="null if any unknown")
    sofa_known_organs: int = Field(ge=0, le=6)
    completeness: dict[str, float] = Field(
        description="Per source, fraction of expected inputs present (0..1)"
    )


class Contribution(Contract):
    """One feature's contribution to a risk score."""

    feature: str
    value: float | None
    contribution: float


class RiskScore(Contract):
    """A risk prediction; key = patient id."""

    schema_version: Literal[1] = 1
    patient_id: PatientId
    computed_at: UtcDatetime
    outcome: str = Field(description="e.g. mods_progression_6h, sepsis")
    horizon_h: float | None = Field(default=None, gt=0)
    probability: float = Field(ge=0, le=1)
    per_organ: dict[Organ, float] = Field(default_factory=dict)
    model_id: str
    model_version: str
    cold_start: bool = Field(description="True while a rule-based fallback is used")
    top_contributions: tuple[Contribution, ...] = ()
    decision_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="The model's alarm threshold in force at computed_at (learned on"
        " discharged patients only); null = none",
    )
