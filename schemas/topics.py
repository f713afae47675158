"""The topic registry: names (with a configurable prefix), keys, payloads, retention.

>>> reg = TopicRegistry(prefix="icu.", partitions=4)
>>> reg.name("vitals")
'icu.vitals'
>>> reg.spec("alerts.ack").payload.__name__
'AlertAck'
>>> reg.configs("deadletter")["retention.ms"]
'-1'
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import BaseModel

from schemas.alerts import AlertAck, AlertEvent
from schemas.annotations import GroundTruth
from schemas.context import ContextEvent
from schemas.deadletter import DeadLetter
from schemas.derived import FeatureSnapshot, RiskScore
from schemas.observations import CrrtStatus, LabResults, NirsSample, VitalSigns

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic of DESIGN.md's table."""

    base_name: str
    key: str
    payload: type[BaseModel]
    description: str
    retention_ms: int | None  # None = broker default; -1 = keep forever
    co_partitioned: bool = True  # keyed by patient id, same partition count as raw topics


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("vitals", "patient id", VitalSigns, "Vital-sign samples, ~1 Hz per bed", 7 * _DAY_MS),
    TopicSpec("nirs", "patient id", NirsSample, "Cerebral oximetry rSO2 L/R", 7 * _DAY_MS),
    TopicSpec("crrt", "patient id", CrrtStatus, "CRRT machine status", 7 * _DAY_MS),
    TopicSpec("labs", "patient id", LabResults, "Lab results (LOINC)", 30 * _DAY_MS),
    TopicSpec("context", "patient id", ContextEvent, "ADT, weight, drugs, charting", 30 * _DAY_MS),
    TopicSpec("features", "patient id", FeatureSnapshot, "Per-organ features", 7 * _DAY_MS),
    TopicSpec("risk", "patient id", RiskScore, "Risk scores", 7 * _DAY_MS),
    TopicSpec("alerts", "patient id", AlertEvent, "Alert events", 30 * _DAY_MS),
    TopicSpec("alerts.ack", "patient id", AlertAck, "Acknowledgements (audited)", -1),
    TopicSpec("groundtruth", "patient id", GroundTruth, "Scenario annotations for scoring", -1),
    TopicSpec(
        "deadletter", "source", DeadLetter, "Refused input, never dropped", -1, co_partitioned=False
    ),
)


@dataclass(frozen=True)
class TopicRegistry:
    """Topic names and settings for one deployment."""

    prefix: str = "icu."
    partitions: int = 4
    replication_factor: int = 1

    def spec(self, base_name: str) -> TopicSpec:
        for spec in TOPICS:
            if spec.base_name == base_name:
                return spec
        raise KeyError(f"no topic {base_name!r}; known: {[s.base_name for s in TOPICS]}")

    def name(self, base_name: str) -> str:
        """Full topic name with the deployment's prefix."""
        return self.prefix + self.spec(base_name).base_name

    def partitions_of(self, base_name: str) -> int:
        return self.partitions if self.spec(base_name).co_partitioned else 1

    def configs(self, base_name: str) -> dict[str, str]:
        """Topic-level configs for creation."""
        spec = self.spec(base_name)
        configs = {"cleanup.policy": "delete", "min.insync.replicas": "1"}
        if spec.retention_ms is not None:
            configs["retention.ms"] = str(spec.retention_ms)
        return configs

    def __iter__(self) -> Iterator[TopicSpec]:
        return iter(TOPICS)

    @property
    def vitals(self) -> str:
        return self.name("vitals")

    @property
    def alerts(self) -> str:
        return self.name("alerts")

    @property
    def deadletter(self) -> str:
        return self.name("deadletter")
