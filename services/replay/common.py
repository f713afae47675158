"""Shared pieces of the replay readers: anchor, skip counts, message builders, the merge.

Readers are pure generators of :class:`~services.ingest.Outbound` records; nothing here
touches Kafka. Every record's event time is the time of its payload (``observed_at``).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel

from schemas.codes import QUANTITIES, Quantity
from schemas.common import SourceInfo
from schemas.context import ContextEvent, PatientContext
from schemas.observations import Measurement, ObservationMessage
from schemas.units import normalise
from services.ingest import Outbound

DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)
"""Default anchor: ICU admission (PhysioNet, MIMIC-III) or record start (MIMIC-II) of every
patient. Fixed, so that two replays produce the same records."""


@dataclass
class Skips:
    """Source rows a reader did not turn into records, counted by reason."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] += n

    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """``reason=n`` pairs, most frequent first (``none`` when nothing was skipped).

        >>> s = Skips(); s.add("no_value"); s.add("no_value"); s.add("error_row"); s.summary()
        'no_value=2, error_row=1'
        """
        if not self.counts:
            return "none"
        return ", ".join(f"{reason}={n}" for reason, n in self.counts.most_common())


def measure(
    quantity: Quantity,
    observed_at: datetime,
    *,
    value: float | None = None,
    value_text: str | None = None,
    unit: str = "",
) -> Measurement:
    """A measurement of a known quantity, coded with its primary code (MDC, LOINC or VIGIL),
    converted and plausibility-checked by :func:`schemas.units.normalise`."""
    system, code, label = QUANTITIES[quantity].primary
    return normalise(
        system,
        code,
        observed_at,
        value=value,
        value_text=value_text,
        unit=unit,
        code_label=label,
        quantity=quantity,
    )


def observation(
    cls: type[ObservationMessage],
    patient_id: str,
    measurements: Sequence[Measurement],
    *,
    source: SourceInfo,
    care_unit: str | None = None,
) -> ObservationMessage:
    """One raw-topic message; ``received_at`` = event time (the publisher restamps it)."""
    return cls(
        patient_id=patient_id,
        care_unit=care_unit,
        source=source,
        received_at=max(m.observed_at for m in measurements),
        measurements=tuple(measurements),
    )


def context(event: PatientContext) -> Outbound:
    """A context-topic record."""
    return Outbound("context", event.patient_id, ContextEvent(event))


def event_time(record: Outbound) -> datetime:
    """Event time of a record: its payload's ``observed_at`` (a message's latest)."""
    payload: BaseModel = record.payload
    if isinstance(payload, ContextEvent):
        return payload.root.observed_at
    if isinstance(payload, ObservationMessage):
        return payload.observed_at
    raise TypeError(f"no event time on {type(payload).__name__}")


def merge_patients(streams: Iterable[Iterator[Outbound]]) -> Iterator[Outbound]:
    """Merge per-patient streams (each in event-time order) by (event time, patient, seq).

    Deterministic: ties in event time go to the lower patient id, then to the record that
    came first in its patient's stream.
    """

    def keyed(stream: Iterator[Outbound]) -> Iterator[tuple[datetime, str, int, Outbound]]:
        for seq, record in enumerate(stream):
            yield event_time(record), record.key, seq, record

    merged = heapq.merge(*(keyed(s) for s in streams), key=lambda item: item[:3])
    for _t, _key, _seq, record in merged:
        yield record
