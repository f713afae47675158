"""The asyncio TCP shell shared by every ingestion listener (HL7/MLLP, NIRS, CRRT, context).

Per connection: bytes are cut into frames by the codec's decoder, each frame is
interpreted by the codec's pure core, and the replies go back in frame order:

1. refused input -> a dead letter with the original bytes (acknowledged by Kafka),
   then the codec's negative reply (HL7 AE/AR, ``ERR`` line);
2. a message already saved (same de-duplication key, same content) -> the positive
   reply, no second publication; one still being written -> it waits for that write;
3. otherwise the records are published and the positive reply is sent only after
   Kafka acknowledged them; if Kafka does not within the timeout, the codec's
   "unavailable" reply (a negative ack asking for a resend) goes out. The write
   itself goes on (see :mod:`services.ingest.gateway`); a resend waits for it.

Frames that arrive together (a pipelining sender) are published together. If even
a dead letter cannot be written, the connection is closed without a reply, so the
sender keeps its message and resends it later. Each connection is its own task with
an idle timeout, a deadline for completing a frame and bounded frames; connections
are capped and a peer that sends only refused input is cut off, so a slow or
malicious peer never stalls the others.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

from schemas.deadletter import DeadLetter
from services.ingest import InputRefusedError, Outbound
from services.ingest.gateway import (
    KafkaGateway,
    RecentKeys,
    StorageUnavailableError,
    Write,
    content_digest,
)
from streams.metrics import DEAD_LETTERS

log = logging.getLogger(__name__)

INGEST_MESSAGES = Counter(
    "vigil_ingest_messages_total",
    "Messages (HL7 messages, lines) received, by adapter and outcome",
    ["adapter", "outcome"],  # accepted, duplicate, refused, unavailable
)
INGEST_RECORDS = Counter(
    "vigil_ingest_records_total", "Records published by ingestion", ["adapter", "topic"]
)
INGEST_REUSED_IDS = Counter(
    "vigil_ingest_reused_ids_total",
    "Messages whose de-duplication id (e.g. MSH-10) came back with other content: published",
    ["adapter"],
)
INGEST_ACK_LATENCY = Histogram(
    "vigil_ingest_ack_latency_seconds",
    "Wall time from receiving a read's frames to writing their replies (incl. Kafka's ack)",
    ["adapter"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0),
)
INGEST_CONNECTIONS = Gauge("vigil_ingest_connections", "Open sender connections", ["adapter"])
INGEST_CONNECTIONS_REFUSED = Counter(
    "vigil_ingest_connections_refused_total", "Connections closed at once: too many", ["adapter"]
)


@dataclass(frozen=True)
class Frame:
    """One complete unit from the byte stream (an HL7 message, a line)."""

    payload: bytes
    seq: int = 0  # 1-based position on its connection (line protocols reply with it)


@dataclass(frozen=True)
class FramingFault:
    """Bytes that could not form a frame (too large, outside any frame): kept, refused."""

    error: InputRefusedError
    original: bytes  # what was kept of them (an oversize frame keeps its beginning)
    reply_expected: bool  # whether the sender is waiting for a reply to these bytes
    seq: int = 0


class Decoder(Protocol):
    def feed(self, data: bytes) -> list[Frame | FramingFault]:
        """Frames (and faults) completed by ``data``, in stream order."""
        ...

    def close(self) -> list[FramingFault]:
        """End of stream: what was left incomplete (nobody waits for a reply to it)."""
        ...

    @property
    def in_frame(self) -> bool:
        """Whether part of a frame has arrived and its end has not."""
        ...


@dataclass(frozen=True)
class Accepted:
    """A frame that became records; ``reply`` is sent once Kafka acknowledged them."""

    records: tuple[Outbound, ...]
    reply: bytes
    dedupe_key: str | None
    unavailable_reply: bytes  # sent instead if Kafka does not acknowledge


@dataclass(frozen=True)
class Refused:
    """A frame that cannot become records: dead-lettered, then ``reply`` (negative)."""

    error: InputRefusedError
    reply: bytes | None


class Codec(Protocol):
    """The protocol-specific, pure part of a listener."""

    @property
    def adapter(self) -> str:
        """ "hl7", "nirs", "crrt", "context": the dead-letter source and metrics label."""
        ...

    def decoder(self, max_frame_bytes: int) -> Decoder: ...

    def interpret(self, frame: Frame, received_at: datetime) -> Accepted | Refused: ...

    def refuse_fault(self, fault: FramingFault, received_at: datetime) -> bytes | None:
        """The negative reply for a framing fault (None: nobody waits for one)."""
        ...


@dataclass(frozen=True)
class ListenerLimits:
    max_frame_bytes: int = 1024 * 1024
    idle_timeout_s: float = 300.0  # also the deadline for completing a started frame
    max_connections: int = 256
    max_refusals_in_a_row: int = 100  # then the connection is closed (a flood of junk)
    shutdown_grace_s: float = 10.0


class _Close(Exception):  # noqa: N818 - control flow, not an error
    """Close the connection without answering what is left."""


@dataclass
class _Connection:
    refusals_in_a_row: int = 0


@dataclass
class Listener:
    """One TCP listener: a codec, a gateway and limits."""

    codec: Codec
    gateway: KafkaGateway
    limits: ListenerLimits = field(default_factory=ListenerLimits)
    recent: RecentKeys = field(default_factory=RecentKeys)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    in_flight: dict[str, tuple[str, Write]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _busy: int = 0

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """Start accepting connections; the caller owns the returned server."""
        return await asyncio.start_server(self._connection, host, port, limit=256 * 1024)

    async def shutdown(self) -> None:
        """After the server stopped accepting: let replies in progress finish (bounded),
        then close every connection. Unanswered senders resend; nothing is lost."""
        deadline = time.monotonic() + self.limits.shutdown_grace_s
        while self._busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        adapter = self.codec.adapter
        peer = writer.get_extra_info("peername")
        if len(self._tasks) >= self.limits.max_connections:
            INGEST_CONNECTIONS_REFUSED.labels(adapter).inc()
            log.warning("%s: refusing %s, %d connections open", adapter, peer, len(self._tasks))
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        INGEST_CONNECTIONS.labels(adapter).inc()
        try:
            await self._converse(reader, writer, peer)
        except (ConnectionError, TimeoutError) as exc:
            log.info("%s: connection %s ended: %s", adapter, peer, exc or type(exc).__name__)
        except _Close as exc:
            log.warning("%s: closing %s: %s", adapter, peer, exc)
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, TimeoutError):
                writer.transport.abort()  # a peer that does not read: drop its buffer
            self._tasks.discard(task)
            INGEST_CONNECTIONS.labels(adapter).dec()

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        decoder = self.codec.decoder(self.limits.max_frame_bytes)
        connection = _Connection()
        frame_started: float | None = None
        while True:
            timeout = self.limits.idle_timeout_s
            if decoder.in_frame:
                frame_started = frame_started or time.monotonic()
                timeout = max(0.0, frame_started + timeout - time.monotonic())
            else:
                frame_started = None
            try:
                data = await asyncio.wait_for(reader.read(64 * 1024), timeout)
            except TimeoutError:
                why = "an incomplete frame" if decoder.in_frame else "idle"
                log.info("%s: closing %s connection %s", self.codec.adapter, why, peer)
                data = b""
            units: list[Frame | FramingFault] = [*decoder.feed(data)] if data else []
            if not data:
                units += decoder.close()
            self._busy += 1
            try:
                started = time.perf_counter()
                replies = await self._handle_all(units, connection)
                for reply in replies:
                    writer.write(reply)
                if replies:
                    await asyncio.wait_for(writer.drain(), self.limits.idle_timeout_s)
                    INGEST_ACK_LATENCY.labels(self.codec.adapter).observe(
                        time.perf_counter() - started
                    )
                if connection.refusals_in_a_row > self.limits.max_refusals_in_a_row:
                    raise _Close(f"{connection.refusals_in_a_row} refused frames in a row")
            finally:
                self._busy -= 1
            if not data:
                return

    async def _handle_all(
        self, units: list[Frame | FramingFault], connection: _Connection
    ) -> list[bytes]:
        """Replies, in order, to the frames that arrived together.

        Accepted frames are published in one go and acknowledged together; a refusal
        first settles the accepted frames before it, so replies keep the frames'
        order. Stops early (what is left gets no reply) when a dead letter cannot be
        written or the connection sent too many refused frames in a row.
        """
        replies: list[bytes] = []
        pending: list[Accepted] = []
        for unit in units:
            if connection.refusals_in_a_row > self.limits.max_refusals_in_a_row:
                break
            received_at = self.clock()
            if isinstance(unit, Frame):
                outcome = self.codec.interpret(unit, received_at)
                if isinstance(outcome, Accepted):
                    pending.append(outcome)
                    connection.refusals_in_a_row = 0
                    continue
                error, original, reply = outcome.error, unit.payload, outcome.reply
            else:
                error, original = unit.error, unit.original
                reply = self.codec.refuse_fault(unit, received_at) if unit.reply_expected else None
            replies += await self._settle(pending)
            connection.refusals_in_a_row += 1
            try:
                await self._dead_letter(original, error, received_at)
            except StorageUnavailableError as exc:
                log.error("%s: dead letter (%s) not saved: %s", self.codec.adapter, error, exc)
                return replies  # the sender gets no reply: it keeps the message, resends
            replies += [reply] if reply else []
        return replies + await self._settle(pending)

    async def _settle(self, pending: list[Accepted]) -> list[bytes]:
        """Publish what ``pending`` frames carry (each message once); replies in order."""
        if not pending:
            return []
        adapter = self.codec.adapter
        batch = list(pending)
        pending.clear()
        # Per frame: None = saved before; "new" = published by this batch; else the
        # write already in flight for the same message (a resend, another connection).
        waits: list[Write | str | None] = []
        records: list[Outbound] = []
        new_keys: dict[str, str] = {}
        for outcome in batch:
            key = outcome.dedupe_key
            digest = content_digest(outcome.records) if key is not None else ""
            if key is None:
                records += outcome.records
                waits.append("new")
                continue
            flight = self.in_flight.get(key)
            if self.recent.get(key) == digest:
                waits.append(None)
            elif flight is not None and flight[0] == digest:
                waits.append(flight[1])
            elif new_keys.get(key) == digest:
                waits.append("new")
            else:
                if self.recent.get(key) is not None or flight is not None or key in new_keys:
                    INGEST_REUSED_IDS.labels(adapter).inc()
                    log.warning("%s: id %r came back with other content: published", adapter, key)
                records += outcome.records
                new_keys[key] = digest
                waits.append("new")
        write = self.gateway.start_publish(records) if records else None
        if write is not None:
            for key, digest in new_keys.items():
                self.in_flight[key] = (digest, write)
                write.add_done_callback(functools.partial(self._landed, key, digest))
            write.add_done_callback(functools.partial(self._count, records))
        involved = {w for w in waits if isinstance(w, asyncio.Task)}
        if write is not None:
            involved.add(write)
        acknowledged = await self.gateway.wait_for_writes(involved)
        replies = []
        for outcome, wait in zip(batch, waits, strict=True):
            if wait is None:
                INGEST_MESSAGES.labels(adapter, "duplicate").inc()
                replies.append(outcome.reply)
                continue
            done = write is None or write in acknowledged if wait == "new" else wait in acknowledged
            INGEST_MESSAGES.labels(adapter, "accepted" if done else "unavailable").inc()
            replies.append(outcome.reply if done else outcome.unavailable_reply)
        if write is not None and write not in acknowledged:
            log.error("%s: Kafka did not acknowledge in time; negative acks sent", adapter)
        return replies

    def _landed(self, key: str, digest: str, write: Write) -> None:
        """A write ended: if it was saved, its messages count as saved (even if late)."""
        if self.in_flight.get(key) == (digest, write):
            del self.in_flight[key]
        if not write.cancelled() and write.exception() is None:
            self.recent.add(key, digest)

    def _count(self, records: list[Outbound], write: Write) -> None:
        if not write.cancelled() and write.exception() is None:
            for record in records:
                INGEST_RECORDS.labels(self.codec.adapter, record.topic).inc()

    async def _dead_letter(
        self, original: bytes, error: InputRefusedError, received_at: datetime
    ) -> None:
        letter = DeadLetter.of(
            original,
            source=self.codec.adapter,
            reason=error.reason,
            detail=str(error),
            received_at=received_at,
        )
        await self.gateway.dead_letter(letter)
        INGEST_MESSAGES.labels(self.codec.adapter, "refused").inc()
        DEAD_LETTERS.labels(self.codec.adapter, error.reason).inc()
        log.warning("%s: refused (%s): %s", self.codec.adapter, error.reason, error)
