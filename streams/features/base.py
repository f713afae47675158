"""The interface every per-organ feature group implements.

A feature group is a small, pure state machine over one patient's inputs: the
worker's per-patient state (``streams.patient``) routes each non-artefact numeric
measurement and each context event to every group, in event time, and asks the
groups for their features when it evaluates the rules. Groups never see Kafka or
the wall clock, and their state round-trips through JSON-able dicts.

Input order: measurements of one quantity arrive in non-decreasing observation
time (the caller drops late ones of frequent quantities); lab results and
context events may arrive out of order (a specimen time older than the last
seen) and must be placed by their own time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

from schemas.codes import Quantity
from schemas.context import PatientContext

Features = dict[str, float | None]
"""Feature name (see ``streams.features.catalog``) -> value; None = unknown."""


@dataclass(frozen=True)
class PatientFacts:
    """Slow-changing facts several groups need, as of the evaluation time."""

    weight_kg: float | None = None
    on_crrt: bool = False
    diuretic_exposed: bool = False


class FeatureGroup(Protocol):
    """One organ's features. Implementations are plain classes with these methods."""

    quantities: ClassVar[frozenset[Quantity]]
    """The measurements the group reads; the caller routes only these to ``observe``."""

    def observe(self, quantity: Quantity, at_s: float, value: float) -> None:
        """A numeric, non-artefact measurement observed at ``at_s`` (epoch seconds)."""

    def observe_context(self, event: PatientContext, at_s: float) -> None:
        """A context event (weight, infusion, urine output, charting...) at ``at_s``."""

    def features(self, at_s: float, facts: PatientFacts) -> Features:
        """Every feature the group owns, as of event time ``at_s`` (unknown = None)."""

    def to_state(self) -> dict[str, Any]:
        """JSON-able state."""

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_state` output."""
