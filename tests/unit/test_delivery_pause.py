"""The worker's consumer delivers every record already fetched from a partition the app
pauses in the middle of that fetch (``DirectDeliveryConsumer.pause_fetching``).

faust's fetch loop (``Consumer.getmany``) hands records over one at a time and awaits
between them; aiokafka has already moved the partition's position past the whole fetch.
A record it skipped there was lost until a restart. These tests drive faust's own loop
over a scripted fetch, without a broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import faust
from faust.types import TP

from streams.delivery import (
    FETCH_MAX_WAIT_MS,
    DirectDeliveryConsumer,
    DirectDeliveryTransport,
    ShortPollConsumerThread,
)

VITALS, LABS = TP("vitals", 0), TP("labs", 0)


class _App(faust.App):
    def _new_transport(self) -> Any:
        return DirectDeliveryTransport(self.conf.broker_consumer, self)


def consumer_fetching(records: dict[TP, list[int]]) -> Any:
    """A worker consumer whose next fetch returns ``records`` (offsets) and no more."""
    app = _App("test-delivery-pause", broker="kafka://127.0.0.1:1")
    assert isinstance(app.consumer, DirectDeliveryConsumer)
    consumer: Any = app.consumer  # its fetch and messages are scripted below
    active = set(records)
    fetched = [records]

    async def next_fetch(timeout: float) -> tuple[dict[TP, list[int]], set[TP]]:
        return (fetched.pop() if fetched else {}), active

    consumer._active_partitions = active
    consumer._wait_next_records = next_fetch
    consumer._to_message = lambda tp, offset: (tp, offset)
    consumer.highwater = lambda tp: 100
    return consumer


async def _nothing(_revoked: object) -> None:
    return None


def delivered(consumer: Any, after_first: Callable[[], None]) -> list[Any]:
    """What faust's loop yields from one fetch; ``after_first`` runs after its first record
    (the app pausing a partition while the loop awaits between records)."""

    async def run() -> list[Any]:
        out: list[Any] = []
        async for _tp, message in consumer.getmany(timeout=0):
            out.append(message)
            if len(out) == 1:
                after_first()
        return out

    return asyncio.run(run())


def test_a_pause_mid_fetch_still_delivers_what_was_fetched_and_holds_the_next_fetch() -> None:
    consumer = consumer_fetching({VITALS: [0, 1, 2], LABS: [7]})
    got = delivered(consumer, lambda: consumer.pause_fetching({VITALS}))
    assert sorted(got) == [(LABS, 7), (VITALS, 0), (VITALS, 1), (VITALS, 2)]
    assert VITALS not in consumer._get_active_partitions()  # the next fetch leaves it out
    consumer.on_buffer_drop(VITALS)  # faust's stream buffer drained: still paused
    assert VITALS not in consumer._get_active_partitions()
    consumer.resume_partitions({VITALS})
    assert VITALS in consumer._get_active_partitions()
    assert VITALS not in consumer._buffered_partitions


def test_a_revoked_partition_loses_the_apps_pause_and_its_buffered_mark() -> None:
    consumer = consumer_fetching({VITALS: [0], LABS: [1]})
    consumer.pause_fetching({VITALS, LABS})
    consumer._on_partitions_revoked = _nothing  # the app's revoke callback
    asyncio.run(consumer.on_partitions_revoked({VITALS}))
    assert VITALS not in consumer._buffered_partitions  # no longer let through
    assert LABS in consumer._buffered_partitions  # still paused by the app


def test_fausts_own_pause_mid_fetch_skips_the_rest_of_the_fetch() -> None:
    """Why the app does not use ``pause_partitions``: the loss this module prevents."""
    consumer = consumer_fetching({VITALS: [0, 1, 2]})
    got = delivered(consumer, lambda: consumer.pause_partitions({VITALS}))
    assert got == [(VITALS, 0)]


def test_the_worker_consumer_long_polls_briefly_not_fausts_1500_ms() -> None:
    """aiokafka keeps one fetch in flight per broker; records of a partition left out of
    it wait until it returns (``FETCH_MAX_WAIT_MS``). faust builds its consumer with
    1,500 ms: at 1,000 beds, waits of that order made the p99 alert latency ~2 s."""
    app = _App("test-delivery-fetch-wait", broker="kafka://127.0.0.1:1")

    async def fetch_wait_ms() -> Any:
        thread: Any = app.consumer._thread  # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        await consumer.stop()  # never started: only closes it
        return consumer._fetch_max_wait_ms

    assert isinstance(app.consumer._thread, ShortPollConsumerThread)  # type: ignore[attr-defined]
    assert asyncio.run(fetch_wait_ms()) == FETCH_MAX_WAIT_MS <= 100
