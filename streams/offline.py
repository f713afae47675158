"""The worker's per-patient pipeline without Kafka: records in, alert drafts out.

Used where the clinical behaviour is what matters and a broker is not: the golden
scenario timeline, scoring against ground truth, and the pure-core benchmark.
It follows the worker's routing (``streams.app``): each record goes to its
patient's :class:`~streams.patient.PatientState`; every patient is ticked on a
``TICK_EVERY_S`` grid of event time that every source has passed (:func:`tick_time`),
as the worker does per partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from schemas.alerts import AlertAck
from schemas.context import ContextEvent
from schemas.observations import ObservationMessage
from streams.alarm import AlertDraft
from streams.patient import FREQUENT_SOURCES, PatientState
from streams.rules import RuleSet

TICK_EVERY_S = 5.0
STALE_SOURCE_S = 120.0
"""A source this far behind the others on a partition no longer holds ticks back."""


def tick_time(
    watermarks: dict[str, float], ticked: float | None, backlog: frozenset[str] = frozenset()
) -> float | None:
    """The next tick: the grid time every live source has passed, if after ``ticked``.

    A source far behind the newest one no longer holds ticks back (its devices
    stopped), unless it has a ``backlog`` of records not yet consumed: then it is
    merely slower to read than the others (a replay at full speed) and is waited for.

    >>> tick_time({"vitals": 100.0, "nirs": 93.0}, None)
    90.0
    >>> tick_time({"vitals": 100.0, "nirs": 93.0}, 90.0) is None
    True
    >>> tick_time({"vitals": 1000.0, "nirs": 93.0}, 90.0)  # NIRS stopped: not waited for
    1000.0
    >>> tick_time({"vitals": 1000.0, "nirs": 93.0}, 90.0, frozenset({"nirs"})) is None
    True
    """
    if not watermarks:
        return None
    newest = max(watermarks.values())
    low = min(t for s, t in watermarks.items() if s in backlog or newest - t <= STALE_SOURCE_S)
    at = low // TICK_EVERY_S * TICK_EVERY_S
    return at if ticked is None or at > ticked else None


RAW_SOURCES = frozenset({"vitals", "nirs", "crrt", "labs", "context", "alerts.ack"})


@dataclass
class OfflinePipeline:
    """Patients by id, fed one decoded record at a time."""

    rules: RuleSet
    patients: dict[str, PatientState] = field(default_factory=dict)
    watermarks: dict[str, float] = field(default_factory=dict)  # source -> latest time
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
        last = state.sources[source].last_at if source in FREQUENT_SOURCES else None
        if last is not None:
            self.watermarks[source] = max(self.watermarks.get(source, last), last)
        return drafts + self._tick()

    def _tick(self) -> list[AlertDraft]:
        at = tick_time(self.watermarks, self.ticked)
        if at is None:
            return []
        self.ticked = at
        drafts: list[AlertDraft] = []
        for state in self.patients.values():
            drafts += state.tick(at, self.rules)
        return drafts

    def run(self, records: Iterable[tuple[str, BaseModel]]) -> Iterator[AlertDraft]:
        for source, payload in records:
            yield from self.feed(source, payload)
