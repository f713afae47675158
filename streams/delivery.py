"""Faust's Kafka consumer without its per-message task race, when nothing can block.

faust's fetch loop hands every record to the stream through
``Consumer.wait_first(deliver(message), suspend_flow.wait())``: it wraps both in
tasks (plus two more for "stopped" and "crashed") and races them, so that a
delivery blocked on a full stream buffer is abandoned when a rebalance suspends
the flow. Profiled on the worker, that race was about a fifth of its CPU, for a
delivery that almost never blocks: it puts the event on a queue with room.

``DirectDeliveryConsumer`` runs the delivery's first step in place. If it
finishes there (it did not block), the race had nothing to decide and is skipped.
If it blocked (flow control, a full buffer, the producer's buffer), the same
coroutine, already started, goes into faust's race unchanged, so a suspension still
abandons it. A suspended or stopping consumer always takes faust's path.

It also fetches with a short long-poll (``FETCH_MAX_WAIT_MS``), see there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator, Iterable
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver
from mode.services import WaitResults

FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a fetch with no new record (faust fixes it at 1,500 ms).

aiokafka keeps one fetch in flight per broker, for the partitions whose records were
all handed over when it was sent. A partition still being handed over is left out, and
its next records wait until that fetch returns: with faust's 1,500 ms, up to 1.5 s when
the partitions in the request are quiet. Measured at 1,000 beds, these waits made the
worker's p99 event-to-alert latency about 2 s. 100 ms bounds them; an idle worker then
sends about 10 small fetches per second.
"""


class _Continue:
    """Awaitable that carries on a coroutine which already ran its first step.

    ``yielded`` is what that step yielded (the future it waits on); awaiting this
    object hands it to the event loop and drives the coroutine from there, exactly
    as a task created before the first step would have.
    """

    def __init__(self, coroutine: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coroutine = coroutine
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        step = self._yielded
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                self._coroutine.close()
                raise
            except BaseException as exc:  # cancellation and errors go to the coroutine
                try:
                    step = self._coroutine.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    step = self._coroutine.send(sent)
                except StopIteration as done:
                    return done.value


class ShortPollConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread, fetching with ``FETCH_MAX_WAIT_MS``."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer


class DirectDeliveryConsumer(aiokafka_driver.Consumer):
    """aiokafka consumer of faust, delivering records in place when that cannot block."""

    _app_paused: set[Any]  # partitions the app paused (``pause_fetching``)

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return ShortPollConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _reset_state(self) -> None:
        super()._reset_state()
        self._app_paused = set()

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if (
            len(coros) != 2
            or timeout is not None
            or not asyncio.iscoroutine(coros[0])
            or self.suspend_flow.is_set()
            or self.should_stop
        ):
            return await super().wait_first(*coros, timeout=timeout)
        deliver, suspended = coros
        try:
            yielded = deliver.send(None)
        except StopIteration as done:  # delivered without blocking: nothing to race
            _close(suspended)
            return WaitResults([deliver], [done.value], False)
        except BaseException:
            _close(suspended)
            raise
        return await super().wait_first(_Continue(deliver, yielded), suspended)

    def pause_fetching(self, tps: Iterable[Any]) -> None:
        """The app's pause: fetch no more from ``tps``, but deliver what already was.

        faust's ``pause_partitions`` only takes partitions out of the active set, and its
        fetch loop skips a record of a partition neither active nor *buffered* (stream
        buffer full). A pause while that loop is between two records of one fetch (it
        awaits flow control and the producer's buffer per record) would skip the rest,
        and aiokafka has already moved the position past them: never applied, and not
        read again before a restart. faust's own pauses (rebalance, recovery) seek back to
        the committed offsets afterwards; the app's merge pauses do not, so its paused
        partitions are also marked buffered: the records in flight get through, and the
        next fetch still leaves them out.
        """
        tpset = set(tps)
        self.pause_partitions(tpset)
        self._buffered_partitions.update(tpset)
        self._app_paused.update(tpset)

    def resume_partitions(self, tps: Iterable[Any]) -> None:
        tpset = set(tps)
        super().resume_partitions(tpset)
        self._buffered_partitions.difference_update(tpset)
        self._app_paused.difference_update(tpset)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        """A revoked partition loses the app's pause with its buffered mark (faust clears
        its own sets of revoked partitions, not that one)."""
        gone = self._app_paused & set(revoked)
        self._buffered_partitions.difference_update(gone)
        self._app_paused.difference_update(gone)
        await super().on_partitions_revoked(revoked)

    def on_buffer_drop(self, tp: Any) -> None:
        """faust makes a partition whose stream buffer drained active again, even one
        the app paused (``pause_partitions``): while a backlog is read that undid the
        worker's merge pauses at once. A paused partition stays paused (and buffered,
        so that what was fetched before the pause is still delivered)."""
        if tp in self._paused_partitions:
            return
        super().on_buffer_drop(tp)


def _close(awaitable: Any) -> None:
    if asyncio.iscoroutine(awaitable):
        awaitable.close()


class DirectDeliveryTransport(aiokafka_driver.Transport):
    """faust's aiokafka transport with :class:`DirectDeliveryConsumer`."""

    Consumer = DirectDeliveryConsumer
