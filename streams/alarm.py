"""The alarm state machine, per (patient, rule), in event time.

inactive -> pending (condition true, waiting its on-delay) -> active (emit start)
-> clearing (resolved, waiting its off-delay) -> inactive (emit end).
A condition that drops before its on-delay is a brief crossing and raises nothing;
a resolution that does not last through the off-delay returns to active.
Unknown input (no usable data) never confirms a pending alarm and never clears an
active one: unknown is not normal (DESIGN.md "Alarm model"; IEC 60601-1-8 alarm
delays, CLINICAL.md "Alarm management").

>>> timing = AlarmTiming(on_delay_s=300, off_delay_s=120)
>>> s = AlarmState()
>>> s, out = step(s, timing, at=0.0, onset=True, resolved=False)
>>> s.phase.value, out
('pending', None)
>>> s, out = step(s, timing, at=300, onset=True, resolved=False)
>>> s.phase.value, out.phase, out.condition_since
('active', 'start', 0.0)
>>> s, out = step(s, timing, at=400, onset=False, resolved=True)
>>> s.phase.value
'clearing'
>>> s, out = step(s, timing, at=520, onset=False, resolved=True)
>>> s.phase.value, out.phase, out.sequence
('inactive', 'end', 1)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal


class AlarmPhase(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    ACTIVE = "active"
    CLEARING = "clearing"


@dataclass(frozen=True)
class AlarmTiming:
    """On-delay before an alarm is raised and off-delay before it ends (seconds)."""

    on_delay_s: float
    off_delay_s: float

    def __post_init__(self) -> None:
        if self.on_delay_s < 0 or self.off_delay_s < 0:
            raise ValueError("alarm delays cannot be negative")


@dataclass(frozen=True)
class AlarmState:
    """Where one (patient, rule) alarm is; immutable, replaced on every step."""

    phase: AlarmPhase = AlarmPhase.INACTIVE
    condition_since: float | None = None  # event time the current episode's condition began
    clearing_since: float | None = None
    sequence: int = 0  # events emitted in the current episode

    def to_state(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "condition_since": self.condition_since,
            "clearing_since": self.clearing_since,
            "sequence": self.sequence,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AlarmState:
        return cls(
            phase=AlarmPhase(state["phase"]),
            condition_since=state["condition_since"],
            clearing_since=state["clearing_since"],
            sequence=int(state["sequence"]),
        )


@dataclass(frozen=True)
class Transition:
    """An alert event the state machine asks for."""

    phase: Literal["start", "end"]
    at: float  # event time of the sample that caused it
    condition_since: float  # identifies the episode
    sequence: int


def step(
    state: AlarmState,
    timing: AlarmTiming,
    *,
    at: float,
    onset: bool | None,
    resolved: bool | None,
) -> tuple[AlarmState, Transition | None]:
    """Advance the alarm by one evaluation at event time ``at``.

    ``onset``: the raise condition holds (e.g. median MAP < 65). ``resolved``: the
    clear condition holds (e.g. median MAP >= 65 + hysteresis). None = unknown.
    """
    phase = state.phase
    if phase is AlarmPhase.INACTIVE:
        if onset:
            pending = AlarmState(AlarmPhase.PENDING, condition_since=at)
            return step(pending, timing, at=at, onset=onset, resolved=resolved)
        return state, None

    if phase is AlarmPhase.PENDING:
        assert state.condition_since is not None
        if not onset:  # a brief crossing, or the data went unknown: nothing raised
            return AlarmState(), None
        if at - state.condition_since >= timing.on_delay_s:
            started = AlarmState(AlarmPhase.ACTIVE, state.condition_since, None, 1)
            return started, Transition("start", at, state.condition_since, 0)
        return state, None

    assert state.condition_since is not None
    if phase is AlarmPhase.ACTIVE:
        if resolved:
            clearing = replace(state, phase=AlarmPhase.CLEARING, clearing_since=at)
            return step(clearing, timing, at=at, onset=onset, resolved=resolved)
        return state, None

    # CLEARING: needs resolved evidence all through the off-delay
    assert state.clearing_since is not None
    if not resolved:
        return replace(state, phase=AlarmPhase.ACTIVE, clearing_since=None), None
    if at - state.clearing_since >= timing.off_delay_s:
        return AlarmState(), Transition("end", at, state.condition_since, state.sequence)
    return state, None
