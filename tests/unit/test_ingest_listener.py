"""The listener's bookkeeping without a broker: a gateway whose writes we hold and release.

What is checked: a positive reply never precedes the write's acknowledgement; a
message in flight is not written twice (a resend, or the same message on another
connection); a reused id with other content is published, not swallowed; a message
without an id is never de-duplicated; a flood of refused frames ends the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.errors import KafkaTimeoutError, ProducerFenced

from schemas.deadletter import DeadLetter
from schemas.topics import TopicRegistry
from services.ingest import Outbound
from services.ingest.codecs import LineCodec
from services.ingest.gateway import KafkaGateway, StorageUnavailableError, Write
from services.ingest.server import Frame, Listener, ListenerLimits, _Connection

NOW = datetime.now(UTC).replace(microsecond=0)


class HeldGateway:
    """Writes complete only when the test releases them."""

    def __init__(self, timeout_s: float = 0.2) -> None:
        self.timeout_s = timeout_s
        self.written: list[list[Outbound]] = []
        self.letters: list[DeadLetter] = []
        self.release = asyncio.Event()
        self.fail_dead_letters = False

    def start_publish(self, records: Sequence[Outbound]) -> Write:
        self.written.append(list(records))

        async def held() -> None:
            await self.release.wait()

        return asyncio.ensure_future(held())

    async def wait_for_writes(self, writes: set[Write]) -> set[Write]:
        if not writes:
            return set()
        done, _ = await asyncio.wait(writes, timeout=self.timeout_s)
        return {w for w in done if w.exception() is None}

    async def dead_letter(self, letter: DeadLetter) -> None:
        if self.fail_dead_letters:
            raise StorageUnavailableError("down")
        self.letters.append(letter)


def line(n: int, *, left: int = 64, with_id: bool = True) -> Frame:
    at = (NOW - timedelta(seconds=60 - n)).isoformat()
    text = f"NIRS v=1 patient=MRN1 device=D1 time={at} left={left}" + (
        f" id={n}" if with_id else ""
    )
    return Frame(text.encode(), seq=n)


def listener(gateway: HeldGateway, **limits: int) -> Listener:
    return Listener(LineCodec("nirs"), gateway, ListenerLimits(**limits))  # type: ignore[arg-type]


async def replies_to(target: Listener, *frames: Frame) -> list[str]:
    replies = await target._handle_all(list(frames), _Connection())
    return [r.decode().strip() for r in replies]


def test_a_late_write_gets_a_negative_reply_and_a_resend_waits_for_it() -> None:
    async def scenario() -> None:
        gateway = HeldGateway()
        target = listener(gateway)
        first = await replies_to(target, line(1))
        assert first[0].startswith("ERR 1 id=1 storage_unavailable")  # not acked in time
        resent = asyncio.ensure_future(replies_to(target, line(1)))
        await asyncio.sleep(0.05)
        gateway.release.set()  # the first write lands now
        assert await resent == ["OK 1 id=1"]
        assert len(gateway.written) == 1  # the resend did not add a second copy
        assert await replies_to(target, line(1)) == ["OK 1 id=1"]  # remembered as saved
        assert len(gateway.written) == 1

    asyncio.run(scenario())


def test_the_same_message_on_two_connections_is_written_once() -> None:
    async def scenario() -> None:
        gateway = HeldGateway(timeout_s=5)
        target = listener(gateway)
        one = asyncio.ensure_future(replies_to(target, line(2)))
        two = asyncio.ensure_future(replies_to(target, line(2)))
        await asyncio.sleep(0.05)
        assert not one.done()  # no positive reply before the write is acknowledged
        gateway.release.set()
        assert await one == ["OK 2 id=2"]
        assert await two == ["OK 2 id=2"]
        assert len(gateway.written) == 1

    asyncio.run(scenario())


def test_a_reused_id_with_other_content_is_published_not_swallowed() -> None:
    async def scenario() -> None:
        gateway = HeldGateway()
        gateway.release.set()
        target = listener(gateway)
        assert await replies_to(target, line(3, left=64)) == ["OK 3 id=3"]
        assert await replies_to(target, line(3, left=52)) == ["OK 3 id=3"]
        assert len(gateway.written) == 2

    asyncio.run(scenario())


def test_messages_without_an_id_are_never_deduplicated() -> None:
    async def scenario() -> None:
        gateway = HeldGateway()
        gateway.release.set()
        target = listener(gateway)
        frames = (line(4, with_id=False), line(4, with_id=False))
        assert await replies_to(target, *frames) == ["OK 4", "OK 4"]
        assert sum(len(w) for w in gateway.written) == 2

    asyncio.run(scenario())


def test_replies_keep_frame_order_around_refusals() -> None:
    async def scenario() -> None:
        gateway = HeldGateway()
        gateway.release.set()
        target = listener(gateway)
        replies = await replies_to(target, line(5), Frame(b"NIRS junk", seq=6), line(7))
        assert [r.split()[:2] for r in replies] == [["OK", "5"], ["ERR", "6"], ["OK", "7"]]
        assert [d.original for d in gateway.letters] == [b"NIRS junk"]

    asyncio.run(scenario())


def test_no_reply_at_all_when_the_dead_letter_cannot_be_written() -> None:
    async def scenario() -> None:
        gateway = HeldGateway()
        gateway.release.set()
        gateway.fail_dead_letters = True
        target = listener(gateway)
        replies = await replies_to(target, line(8), Frame(b"junk", seq=9), line(10))
        assert replies == ["OK 8 id=8"]  # nothing for the refused frame nor after it

    asyncio.run(scenario())


@pytest.mark.parametrize("limit", [3])
def test_a_flood_of_refused_frames_stops_being_answered(limit: int) -> None:
    async def scenario() -> None:
        gateway = HeldGateway()
        target = listener(gateway, max_refusals_in_a_row=limit)
        connection = _Connection()
        junk = [Frame(b"junk %d" % n, seq=n) for n in range(1, 20)]
        replies = await target._handle_all(junk, connection)
        assert len(replies) == limit + 1
        assert connection.refusals_in_a_row == limit + 1
        assert len(gateway.letters) == limit + 1

    asyncio.run(scenario())


def test_a_fenced_producer_marks_the_gateway_failed_for_good_but_a_timeout_does_not() -> None:
    async def scenario() -> None:
        gateway = KafkaGateway("127.0.0.1:1", TopicRegistry(), client_id="test")

        async def fail(exc: Exception) -> None:
            raise exc

        for exc in (KafkaTimeoutError(), ProducerFenced()):
            write = asyncio.ensure_future(fail(exc))
            await asyncio.wait({write})
            gateway._after(write)
            assert (gateway.fatal is not None) is isinstance(exc, ProducerFenced)

    asyncio.run(scenario())
