"""The alerts and alerts.ack topics: self-contained, versioned alert events.

An alert event says what fired, on which values against which thresholds, when
the triggering sample was observed (event time) and when the alert was raised
(wall clock): their difference is the alarm latency (DESIGN.md "Alarm model").
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.common import Contract, PatientId, UtcDatetime


class AlertPhase(StrEnum):
    START = "start"
    UPDATE = "update"
    ESCALATE = "escalate"
    END = "end"


class AlertReason(StrEnum):
    """Why an event was emitted (the phase says what; this says why)."""

    ONSET = "onset"  # start: the condition held through its on-delay
    BAND = "band"  # start or escalate: a worse band held through its own on-delay
    DURATION = "duration"  # escalate: still active after the escalation time
    REMINDER = "reminder"  # update: re-announcement of an unacknowledged alarm
    ACKNOWLEDGE = "acknowledge"  # update: a clinician acknowledged it
    SILENCE = "silence"  # update: reminders silenced until ``silenced_until``
    UNSILENCE = "unsilence"  # update: the silence was lifted
    LATCHED = "latched"  # update: resolved, but shown until acknowledged (latching rule)
    RELAPSED = "relapsed"  # update: the condition returned while latched
    RESOLVED = "resolved"  # end: the clear condition held through its off-delay
    RULE_REMOVED = "rule_removed"  # end: the rule was removed or disabled
    DISCHARGED = "discharged"  # end: the patient left the unit (ADT discharge)


class AlertPriority(StrEnum):
    """IEC 60601-1-8 priorities (high red, medium yellow, low cyan)."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class AlertEvent(Contract):
    """One event in the life of one alert; key = patient id."""

    schema_version: Literal[1] = 1
    event_id: str = Field(description="Deterministic id of this event (drop duplicates on it)")
    alert_id: str = Field(description="Deterministic id shared by all events of one alert")
    sequence: int = Field(ge=0, description="0 for start, then increasing per event")
    patient_id: PatientId
    bed: str | None = Field(default=None, max_length=32)
    care_unit: str | None = Field(default=None, max_length=32)
    site: str | None = Field(default=None, max_length=64)
    phase: AlertPhase
    priority: AlertPriority
    kind: Literal["physiological", "technical"] = "physiological"
    rule_id: str = Field(min_length=1, max_length=64)
    rule_version: int = Field(ge=1)
    title: str = Field(max_length=128)
    values: dict[str, float | None] = Field(description="Values that fired it, names with units")
    thresholds: dict[str, float] = Field(description="Thresholds they were compared with")
    condition_since: UtcDatetime = Field(description="Event time the condition first held")
    triggered_at: UtcDatetime = Field(description="Observation time of the triggering sample")
    raised_at: UtcDatetime = Field(description="Wall-clock time the event was emitted")
    trigger_received_at: UtcDatetime | None = Field(
        default=None, description="Wall-clock time the triggering sample reached Vigil"
    )
    explanation: tuple[str, ...] = Field(description="Rule trace, human-readable")
    source: str = Field(max_length=256, description="Clinical source of the rule")
    reason: AlertReason | None = Field(default=None, description="Why this event was emitted")
    latched: bool = Field(
        default=False, description="Resolved but shown until acknowledged (latching rule)"
    )
    acknowledged_by: str | None = Field(
        default=None, max_length=64, description="Who acknowledged it (until it escalates)"
    )
    acknowledged_at: UtcDatetime | None = Field(default=None, description="When it was acked")
    silenced_until: UtcDatetime | None = Field(
        default=None, description="Reminders silenced until then (never hidden)"
    )


class AlertAck(Contract):
    """An acknowledgement or silence of an alert; audited, key = patient id."""

    schema_version: Literal[1] = 1
    ack_id: str
    alert_id: str
    patient_id: PatientId
    action: Literal["acknowledge", "silence", "unsilence"]
    user: str = Field(min_length=1, max_length=64)
    role: Literal["viewer", "clinician", "admin"]
    at: UtcDatetime
    silence_until: UtcDatetime | None = None
    comment: str | None = Field(default=None, max_length=512)
