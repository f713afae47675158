"""Event-time merge of one partition's sources, and the ticks between records.

Vitals, NIRS, CRRT, labs and context of the same patients live in different topics
(one partition number each). A consumer reads those topic-partitions at different
paces: at full replay speed one topic can run minutes or hours of event time ahead of
another (a PhysioNet patient's hourly labs all arrive before its vitals are read).
Applying records in arrival order would make alerts and snapshots depend on that
pace. ``PartitionMerge``
holds the records of each source and releases them in event-time order, waiting
for a source only while it still has unread records (a *backlog*); a source that
is caught up and silent is not waited for (its devices are off, and that is what
the "no data" alarms are for).

Between released records it emits *ticks* on a ``TICK_EVERY_S`` grid of event
time: a tick at ``g`` comes after every record with time <= ``g`` and before any
later one, so the "no data" rules see the same thing at any replay speed.

>>> merge = PartitionMerge()
>>> merge.add("nirs", 12.0, "n12")
>>> merge.add("vitals", 3.0, "v3")
>>> merge.add("vitals", 11.0, "v11")
>>> [(kind, at) for kind, at, _item in merge.release(lambda source: True)]
[('vitals', 3.0), ('tick', 5.0), ('tick', 10.0), ('vitals', 11.0), ('nirs', 12.0)]
>>> merge.add("vitals", 20.0, "v20")
>>> list(merge.release(lambda source: source != "nirs"))  # NIRS has unread records: wait
[]
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator, Set
from typing import Any

TICK_EVERY_S = 5.0
SOURCES = ("vitals", "nirs", "crrt", "labs", "context")
"""Merged sources; at equal times a record of an earlier one goes first (a discharge
after its hour's vitals and labs). A lab is placed by its specimen time: one that
arrives late is simply released at once (its time is behind the others')."""
MAX_TICKS_PER_GAP = 720
"""At most an hour of 5-s ticks across a silent stretch (then it jumps to the latest)."""


class PartitionMerge:
    """Per partition: records out in event-time order, with grid ticks."""

    def __init__(self, ticked: float | None = None) -> None:
        """``ticked``: the grid time ticks resume after (a partition taken over after a
        rebalance or restart, see ``PatientState.resume_tick``); None: the grid starts
        at the first record."""
        self.queues: dict[str, deque[tuple[float, int, Any]]] = {s: deque() for s in SOURCES}
        self.sequence = 0
        self.released_at: float | None = None
        self.ticked = ticked

    def add(self, source: str, at: float, item: Any) -> None:
        """Hold a record of ``source`` observed at ``at`` (arrival order kept per source)."""
        self.sequence += 1
        self.queues[source].append((at, self.sequence, item))

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def flow(self, paused: Set[str], cap: int) -> tuple[set[str], set[str]]:
        """(sources to pause, paused sources to resume): pause one whose queue reached
        ``cap`` records, resume one back at ``cap // 2``.

        A backlog is read unevenly (Kafka fetches by bytes, so small context and lab
        records run far ahead of vital signs) and the merge would hold all of that
        ahead. Never a deadlock: the merge only waits for a source whose queue is empty,
        and such a source is never paused (a paused one is resumed before it empties).
        The output does not change: the merge releases in event time at any pace.

        >>> merge = PartitionMerge()
        >>> for i in range(4):
        ...     merge.add("labs", float(i), None)
        >>> merge.flow(set(), cap=4), merge.flow({"labs"}, cap=4), merge.flow({"vitals"}, cap=4)
        (({'labs'}, set()), (set(), set()), ({'labs'}, {'vitals'}))
        """
        pause = {s for s, q in self.queues.items() if len(q) >= cap and s not in paused}
        resume = {s for s in paused if len(self.queues[s]) <= cap // 2}
        return pause, resume

    def release(self, caught_up: Callable[[str], bool]) -> Iterator[tuple[str, float, Any]]:
        """Yield ``(source, time, item)`` in event-time order and ``("tick", g, None)``.

        Stops at the first record that a source with a backlog (``caught_up`` False)
        and an empty queue might still precede.
        """
        while True:
            heads = [(q[0][0], i, s) for i, (s, q) in enumerate(self.queues.items()) if q]
            if not heads:
                return
            at, _rank, source = min(heads)
            for other, queue in self.queues.items():
                if other != source and not queue and not caught_up(other):
                    return
            yield from self._ticks_before(at)
            _at, _seq, item = self.queues[source].popleft()
            self.released_at = at if self.released_at is None else max(self.released_at, at)
            yield source, at, item

    def _ticks_before(self, at: float) -> Iterator[tuple[str, float, Any]]:
        """Ticks for the grid times strictly before ``at`` not ticked yet."""
        if self.ticked is None:  # the grid starts at the first record
            self.ticked = (at // TICK_EVERY_S) * TICK_EVERY_S
            return
        last = (at // TICK_EVERY_S) * TICK_EVERY_S
        if last == at:  # a tick at ``g`` comes after the records *at* ``g``
            last -= TICK_EVERY_S
        first = self.ticked + TICK_EVERY_S
        if last < first:
            return
        if (last - first) / TICK_EVERY_S > MAX_TICKS_PER_GAP:
            first = last - MAX_TICKS_PER_GAP * TICK_EVERY_S
        g = first
        while g <= last:
            yield "tick", g, None
            g += TICK_EVERY_S
        self.ticked = last


class TickSchedule:
    """Patients of one partition by the event time their "no data" rules fall due.

    The merge yields a tick every 5 s; only the patients due by then are ticked
    (``PatientState.next_tick_at``), so a partition of thousands of quiet patients
    costs a heap look-up per tick, not a loop over them.

    >>> schedule = TickSchedule()
    >>> schedule.schedule("b", 70.0); schedule.schedule("a", 65.0); schedule.schedule("b", 90.0)
    >>> schedule.pop_due(60.0), schedule.pop_due(70.0), schedule.pop_due(100.0)
    ([], ['a', 'b'], [])
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}

    def schedule(self, patient_id: str, due: float | None) -> None:
        """Tick ``patient_id`` at the first grid point at or after ``due`` (None: no
        change). An earlier due time wins; a later one is re-checked when it pops."""
        if due is None:
            return
        current = self._due.get(patient_id)
        if current is None or due < current:
            self._due[patient_id] = due
            heapq.heappush(self._heap, (due, patient_id))

    def pop_due(self, at: float) -> list[str]:
        """Patients due at or before ``at``, by due time then id, no longer scheduled."""
        popped: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= at:
            due, patient_id = heapq.heappop(heap)
            if self._due.get(patient_id) == due:
                del self._due[patient_id]
                popped.append(patient_id)
        return popped
