"""Delayed labels: buffered predictions joined to outcomes revealed later (bounded buffers).

A prediction's model input is buffered with the probability that was published for
it. Its label comes late:

- **MODS progression** (labelled from the stream itself): positive as soon as a later
  snapshot within the horizon shows a new organ failure (a SOFA subscore >= 3 in an
  organ known and < 3 at prediction time) or a SOFA rise >= 2 (sum over the organs
  known at prediction time; an organ unknown later keeps its value); negative once a
  snapshot *after* the horizon arrives without either. Entries whose horizon is cut by
  a discharge are dropped (censored), never guessed.
- **External labels** (``OutcomeLabel`` on the context topic): the label in force at a
  prediction's time is the latest label observed at or before it; the join is made at
  discharge, when the patient's labels are complete.

Buffers are bounded: at most one entry per ``sample_every_s`` per patient, at most
``max_per_patient`` entries (oldest dropped) and ``max_patients`` patients (the
least recently seen dropped); every drop is counted.

>>> buf = DelayedLabelBuffer(sample_every_s=0)
>>> buf.add("p1", Pending(0.0, {"a": 1.0}, 0.2, {"renal": 1}, 1))
True
>>> buf.add("p1", Pending(3600.0, {"a": 2.0}, 0.3, {"renal": 1}, 1))
True
>>> [(e.at, y) for e, y in buf.resolve_mods("p1", 7200.0, {"renal": 3}, 3, horizon_s=21600)]
[(0.0, True), (3600.0, True)]
>>> join_labels([Pending(5.0, {}, 0.1)], [(0.0, False), (4.0, True)])[0][1]
True
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class Pending:
    """One scored prediction waiting for its label."""

    at: float
    x: dict[str, float]
    p: float  # the model's probability at ``at`` (scored before the label is learned)
    organs: dict[str, int | None] = field(default_factory=dict)  # SOFA subscores at ``at``
    sofa_sum: int | None = None  # sum of the known subscores at ``at``
    p_published: float | None = None  # what was published (fallback during cold start)


@dataclass
class DelayedLabelBuffer:
    """Per-patient buffers of pending predictions, bounded in entries and patients."""

    sample_every_s: float = 3600.0
    max_per_patient: int = 1000
    max_patients: int = 5000
    entries: OrderedDict[str, list[Pending]] = field(default_factory=OrderedDict)
    dropped: int = 0

    def add(self, patient_id: str, entry: Pending) -> bool:
        """Buffer ``entry`` unless one was buffered less than ``sample_every_s`` before."""
        pending = self.entries.get(patient_id)
        if pending is None:
            pending = self.entries[patient_id] = []
            while len(self.entries) > self.max_patients:
                _pid, gone = self.entries.popitem(last=False)
                self.dropped += len(gone)
        else:
            self.entries.move_to_end(patient_id)
        if pending and entry.at - pending[-1].at < self.sample_every_s:
            return False
        pending.append(entry)
        if len(pending) > self.max_per_patient:
            del pending[0]
            self.dropped += 1
        return True

    def pop(self, patient_id: str) -> list[Pending]:
        """Every pending entry of a patient, removed from the buffer."""
        return self.entries.pop(patient_id, [])

    def size(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def resolve_mods(
        self,
        patient_id: str,
        at: float,
        organs: Mapping[str, int | None],
        sofa_sum: int | None,
        *,
        horizon_s: float,
    ) -> list[tuple[Pending, bool]]:
        """Entries whose MODS-progression label the snapshot at ``at`` settles."""
        pending = self.entries.get(patient_id)
        if not pending:
            return []
        settled: list[tuple[Pending, bool]] = []
        keep: list[Pending] = []
        for entry in pending:
            if at <= entry.at:
                keep.append(entry)
            elif at > entry.at + horizon_s:
                settled.append((entry, False))
            elif mods_event(entry.organs, organs):
                settled.append((entry, True))
            else:
                keep.append(entry)
        pending[:] = keep
        return settled


def known_sum(before: Mapping[str, int | None], now: Mapping[str, int | None]) -> int | None:
    """Sum of ``now``'s subscores over the organs known in ``before`` (unknown keeps before).

    >>> known_sum({"renal": 1, "cns": None}, {"renal": 3, "cns": 2})
    3
    """
    known = [organ for organ, value in before.items() if value is not None]
    if not known:
        return None
    total = 0
    for organ in known:
        value = now.get(organ)
        total += value if value is not None else int(before[organ] or 0)
    return total


def mods_event(before: Mapping[str, int | None], now: Mapping[str, int | None]) -> bool:
    """A new organ failure, or SOFA over the organs known before rising by >= 2.

    >>> mods_event({"renal": 1, "liver": 0}, {"renal": 2, "liver": 0})
    False
    >>> mods_event({"renal": 1, "liver": 0}, {"renal": 2, "liver": 1})
    True
    >>> mods_event({"renal": None}, {"renal": 4})
    False
    """
    for organ, value in before.items():
        later = now.get(organ)
        if value is not None and later is not None and value < 3 <= later:
            return True
    then = sum(v for v in before.values() if v is not None)
    later_sum = known_sum(before, now)
    return later_sum is not None and later_sum - then >= 2


def join_labels(
    pending: Sequence[Pending], labels: Sequence[tuple[float, bool]]
) -> list[tuple[Pending, bool]]:
    """Each entry with the label in force at its time (latest label at or before it);
    entries earlier than every label are left out."""
    ordered = sorted(labels)
    times = [t for t, _y in ordered]
    joined = []
    for entry in pending:
        i = bisect.bisect_right(times, entry.at) - 1
        if i >= 0:
            joined.append((entry, ordered[i][1]))
    return joined
