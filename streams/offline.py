"""The worker's per-patient pipeline without Kafka: records in, alert drafts out.

Used where the clinical behaviour is what matters and a broker is not: the golden
scenario timeline, scoring against ground truth, and the pure-core benchmark.
It follows the worker's routing (``streams.app``) exactly: a patient's records go
to the partition Kafka's default partitioner gives its key; per partition, vitals,
NIRS, CRRT, labs and context are merged in event time and ticked on the same grid
(``streams.merge``); acknowledgements and risk scores are applied on arrival.
Records are expected in the order they were produced (per topic, event time).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kafka.partitioner.default import murmur2
from pydantic import BaseModel

from schemas.alerts import AlertAck
from schemas.context import ContextEvent
from schemas.derived import RiskScore
from schemas.observations import ObservationMessage
from streams.alarm import AlertDraft
from streams.merge import PartitionMerge, TickSchedule
from streams.patient import PatientState, tick_due
from streams.rules import RuleSet

RAW_SOURCES = frozenset({"vitals", "nirs", "crrt", "labs", "context", "alerts.ack", "risk"})


def partition_of(patient_id: str, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives a patient id key.

    >>> partition_of("sim-001", 4) == partition_of("sim-001", 4)
    True
    """
    hashed: int = murmur2(patient_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass
class OfflinePipeline:
    """Patients by id, fed one decoded record at a time."""

    rules: RuleSet
    partitions: int = 4
    patients: dict[str, PatientState] = field(default_factory=dict)
    merges: dict[int, PartitionMerge] = field(default_factory=dict)
    schedules: dict[int, TickSchedule] = field(default_factory=dict)  # partition -> ticks due

    def _state(self, patient_id: str) -> PatientState:
        state = self.patients.get(patient_id)
        if state is None:
            state = self.patients[patient_id] = PatientState(patient_id)
        return state

    def _schedule(self, state: PatientState) -> None:
        """After a record: re-check its "no data" rules on the next tick (as the worker)."""
        if state.clock is not None:
            partition = partition_of(state.patient_id, self.partitions)
            schedule = self.schedules.get(partition)
            if schedule is None:
                schedule = self.schedules[partition] = TickSchedule()
            schedule.schedule(state.patient_id, state.clock)

    def feed(self, source: str, payload: BaseModel) -> list[AlertDraft]:
        """Apply one record of a raw topic; topics Vigil does not consume are ignored."""
        if source not in RAW_SOURCES:
            return []
        if isinstance(payload, ContextEvent):
            payload = payload.root
        patient_id = str(getattr(payload, "patient_id"))  # noqa: B009 - every payload has one
        state = self._state(patient_id)
        if isinstance(payload, AlertAck):
            found = state.acknowledge(payload, self.rules)
        elif isinstance(payload, RiskScore):
            found = state.apply_risk(payload, self.rules)
        else:
            return self._merged(source, patient_id, payload)
        self._schedule(state)
        return found

    def _merged(self, source: str, patient_id: str, payload: Any) -> list[AlertDraft]:
        """Through the partition's event-time merge (as the worker): records, ticks."""
        partition = partition_of(patient_id, self.partitions)
        merge = self.merges.get(partition)
        if merge is None:
            merge = self.merges[partition] = PartitionMerge()
        merge.add(source, payload.observed_at.timestamp(), payload)
        drafts: list[AlertDraft] = []
        for kind, at, item in merge.release(lambda _source: True):
            if kind == "tick":
                schedule = self.schedules.get(partition)
                if schedule is not None:
                    for _patient, found in tick_due(schedule, self.patients.get, at, self.rules):
                        drafts += found
                continue
            state = self._state(item.patient_id)
            state.retire_if_due(at)  # as the worker: a month after a discharge, a stub
            if isinstance(item, ObservationMessage):
                drafts += state.apply_observations(kind, item, self.rules)
            else:
                drafts += state.apply_context(item, self.rules)
            self._schedule(state)
        return drafts

    def run(self, records: Iterable[tuple[str, BaseModel]]) -> Iterator[AlertDraft]:
        for source, payload in records:
            yield from self.feed(source, payload)
