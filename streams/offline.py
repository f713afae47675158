"""The worker's per-patient pipeline without Kafka: records in, alert drafts out.

Used where the clinical behaviour is what matters and a broker is not: the golden
scenario timeline, scoring against ground truth, and the pure-core benchmark.
It follows the worker's routing (``streams.app``): each record goes to its
patient's :class:`~streams.patient.PatientState`; every ``TICK_EVERY_S`` of the
run's event time every patient is ticked, as the worker does per partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from schemas.alerts import AlertAck
from schemas.context import ContextEvent
from schemas.observations import ObservationMessage
from streams.alarm import AlertDraft
from streams.patient import PatientState
from streams.rules import RuleSet

TICK_EVERY_S = 5.0
RAW_SOURCES = frozenset({"vitals", "nirs", "crrt", "labs", "context", "alerts.ack"})


@dataclass
class OfflinePipeline:
    """Patients by id, fed one decoded record at a time."""

    rules: RuleSet
    patients: dict[str, PatientState] = field(default_factory=dict)
    watermark: float | None = None
    ticked: float | None = None

    def feed(self, source: str, payload: BaseModel) -> list[AlertDraft]:
        """Apply one record of a raw topic; topics Vigil does not consume are ignored."""
        if source not in RAW_SOURCES:
            return []
        if isinstance(payload, ContextEvent):
            payload = payload.root
        patient_id = str(getattr(payload, "patient_id"))  # noqa: B009 - every payload has one
        state = self.patients.get(patient_id)
        if state is None:
            state = self.patients[patient_id] = PatientState(patient_id)
        if isinstance(payload, ObservationMessage):
            drafts = state.apply_observations(source, payload, self.rules)
        elif isinstance(payload, AlertAck):
            drafts = state.acknowledge(payload, self.rules)
        else:
            drafts = state.apply_context(payload, self.rules)  # type: ignore[arg-type]
        if state.clock is not None:
            self.watermark = max(self.watermark or state.clock, state.clock)
        return drafts + self._tick()

    def _tick(self) -> list[AlertDraft]:
        if self.watermark is None:
            return []
        if self.ticked is not None and self.watermark - self.ticked < TICK_EVERY_S:
            return []
        self.ticked = self.watermark
        drafts: list[AlertDraft] = []
        for state in self.patients.values():
            drafts += state.tick(self.watermark, self.rules)
        return drafts

    def run(self, records: Iterable[tuple[str, BaseModel]]) -> Iterator[AlertDraft]:
        for source, payload in records:
            yield from self.feed(source, payload)
