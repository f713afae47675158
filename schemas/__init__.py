"""The contracts: pydantic models of every message on every topic, codes, units, topics.

This package imports nothing else of Vigil's, so any consumer (a remote telemetry
centre, a test, a notebook) can depend on it alone.
"""

from schemas.alerts import AlertAck, AlertEvent, AlertPhase, AlertPriority
from schemas.annotations import GroundTruth
from schemas.codes import CodeSystem, Quantity
from schemas.common import Contract, SourceInfo
from schemas.context import ContextEvent, PatientContext
from schemas.deadletter import DeadLetter
from schemas.derived import FeatureSnapshot, RiskScore
from schemas.observations import (
    CrrtStatus,
    LabResults,
    Measurement,
    NirsSample,
    VitalSigns,
)
from schemas.topics import TopicRegistry, TopicSpec

__all__ = [
    "AlertAck",
    "AlertEvent",
    "AlertPhase",
    "AlertPriority",
    "CodeSystem",
    "ContextEvent",
    "Contract",
    "CrrtStatus",
    "DeadLetter",
    "FeatureSnapshot",
    "GroundTruth",
    "LabResults",
    "Measurement",
    "NirsSample",
    "PatientContext",
    "Quantity",
    "RiskScore",
    "SourceInfo",
    "TopicRegistry",
    "TopicSpec",
    "VitalSigns",
]
