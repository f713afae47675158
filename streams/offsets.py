"""Offsets a worker has taken in one assignment of its partitions.

A new assignment reads every partition from its committed offset. faust reads it once
more from there when its recovery of the state table completes, so records read before
that arrive twice: the second copy of an offset already taken is skipped. A record
*below* the first offset taken means the assignment's first record was past the
committed offset (the records before it come late, after later ones): it is reported,
not skipped.

>>> taken = TakenOffsets()
>>> [taken.take(("vitals", 0), offset) for offset in (10, 11, 12)]
[True, True, True]
>>> taken.already_taken(("vitals", 0), 11), taken.already_taken(("vitals", 0), 13)
(True, False)
>>> taken.take(("vitals", 0), 9)  # below the first offset taken: late, not skipped
False
>>> taken.already_taken(("vitals", 0), 9), taken.last(("vitals", 0))
(False, 12)
>>> taken.clear(); taken.last(("vitals", 0)) is None
True
"""

from __future__ import annotations

TopicPartition = tuple[str, int]


class TakenOffsets:
    """Per topic-partition, the first and the last offset taken in this assignment."""

    def __init__(self) -> None:
        self._first: dict[TopicPartition, int] = {}
        self._last: dict[TopicPartition, int] = {}

    def already_taken(self, tp: TopicPartition, offset: int) -> bool:
        """Whether ``offset`` lies between the first and the last offset taken."""
        last = self._last.get(tp)
        return last is not None and self._first[tp] <= offset <= last

    def take(self, tp: TopicPartition, offset: int) -> bool:
        """Remember ``offset`` as taken; False when it is below the first one taken."""
        first = self._first.setdefault(tp, offset)
        self._last[tp] = max(offset, self._last.get(tp, offset))
        return offset >= first

    def last(self, tp: TopicPartition) -> int | None:
        """The highest offset taken (None: nothing taken in this assignment)."""
        return self._last.get(tp)

    def clear(self) -> None:
        """Forget everything (a rebalance began)."""
        self._first.clear()
        self._last.clear()
