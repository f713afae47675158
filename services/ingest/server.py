"""The asyncio TCP shell shared by every ingestion listener (HL7/MLLP, NIRS, CRRT, context).

Per connection: bytes are cut into frames by the codec's decoder, each frame is
interpreted by the codec's pure core, and then, strictly in order:

1. refused input -> a dead letter with the original bytes (acknowledged by Kafka),
   then the codec's negative reply (HL7 AE/AR, ``ERR`` line);
2. a frame already saved (same de-duplication key) -> the positive reply, no
   second publication;
3. otherwise the records are published and the positive reply is sent only after
   Kafka acknowledged them; if Kafka does not, the codec's "unavailable" reply
   (a negative ack asking for a resend) goes out, never a positive one.

If even the dead letter cannot be written, the connection is closed without a
reply, so the sender keeps its message and resends it later. Each connection is
its own task with an idle timeout and bounded frames, and the number of
connections is capped, so a slow or malicious peer never stalls the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

from schemas.deadletter import DeadLetter
from services.ingest import InputRefusedError, Outbound
from services.ingest.gateway import KafkaGateway, RecentKeys, StorageUnavailableError
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
INGEST_ACK_LATENCY = Histogram(
    "vigil_ingest_ack_latency_seconds",
    "Wall time from a complete frame to its reply (incl. Kafka's acknowledgement)",
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
    idle_timeout_s: float = 300.0
    max_connections: int = 256


@dataclass
class Listener:
    """One TCP listener: a codec, a gateway and limits."""

    codec: Codec
    gateway: KafkaGateway
    limits: ListenerLimits = field(default_factory=ListenerLimits)
    recent: RecentKeys = field(default_factory=RecentKeys)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _connections: int = 0

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """Start accepting connections; the caller owns the returned server."""
        return await asyncio.start_server(
            self._connection, host, port, limit=self.limits.max_frame_bytes
        )

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        adapter = self.codec.adapter
        peer = writer.get_extra_info("peername")
        if self._connections >= self.limits.max_connections:
            INGEST_CONNECTIONS_REFUSED.labels(adapter).inc()
            log.warning("%s: refusing %s, %d connections open", adapter, peer, self._connections)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        self._connections += 1
        INGEST_CONNECTIONS.labels(adapter).inc()
        try:
            await self._converse(reader, writer, peer)
        except (ConnectionError, TimeoutError) as exc:
            log.info("%s: connection %s ended: %s", adapter, peer, exc or type(exc).__name__)
        finally:
            self._connections -= 1
            INGEST_CONNECTIONS.labels(adapter).dec()
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        decoder = self.codec.decoder(self.limits.max_frame_bytes)
        while True:
            try:
                data = await asyncio.wait_for(reader.read(64 * 1024), self.limits.idle_timeout_s)
            except TimeoutError:
                log.info("%s: closing idle connection %s", self.codec.adapter, peer)
                return
            if not data:
                return
            started = time.perf_counter()
            replies = await self._handle_all(decoder.feed(data))
            for reply in replies:
                if reply is _CLOSE:
                    log.error("%s: dead letter not saved; closing %s", self.codec.adapter, peer)
                    return
                writer.write(reply)
            if replies:
                await asyncio.wait_for(writer.drain(), self.limits.idle_timeout_s)
                elapsed = time.perf_counter() - started
                for _ in replies:
                    INGEST_ACK_LATENCY.labels(self.codec.adapter).observe(elapsed)

    async def _handle_all(self, units: list[Frame | FramingFault]) -> list[bytes]:
        """Replies, in order, to the frames that arrived together.

        Accepted frames that arrived together (a pipelining sender) are published in
        one go and acknowledged together once Kafka has all of them; a refusal first
        settles the accepted frames before it, so replies keep the frames' order. A
        ``_CLOSE`` reply ends the list: nothing after it is answered.
        """
        adapter = self.codec.adapter
        replies: list[bytes] = []
        pending: list[Accepted] = []
        for unit in units:
            received_at = self.clock()
            if isinstance(unit, FramingFault):
                replies += await self._settle(pending)
                INGEST_MESSAGES.labels(adapter, "refused").inc()
                if not await self._dead_letter(unit.original, unit.error, received_at):
                    return [*replies, _CLOSE]
                reply = self.codec.refuse_fault(unit, received_at) if unit.reply_expected else None
                replies += [reply] if reply else []
                continue
            outcome = self.codec.interpret(unit, received_at)
            if isinstance(outcome, Refused):
                replies += await self._settle(pending)
                INGEST_MESSAGES.labels(adapter, "refused").inc()
                if not await self._dead_letter(unit.payload, outcome.error, received_at):
                    return [*replies, _CLOSE]
                replies += [outcome.reply] if outcome.reply else []
                continue
            pending.append(outcome)
        return replies + await self._settle(pending)

    async def _settle(self, pending: list[Accepted]) -> list[bytes]:
        """Publish what ``pending`` frames carry (duplicates once); their replies, in order."""
        if not pending:
            return []
        adapter = self.codec.adapter
        batch = list(pending)
        pending.clear()
        records: list[Outbound] = []
        saved_before: list[bool] = []
        keys_in_batch: set[str] = set()
        for outcome in batch:
            key = outcome.dedupe_key
            saved_before.append(key is not None and key in self.recent)
            if key is not None and (key in self.recent or key in keys_in_batch):
                continue  # published already, or by an earlier frame of this batch
            records += outcome.records
            if key is not None:
                keys_in_batch.add(key)
        try:
            if records:
                await self.gateway.publish(records)
            stored = True
        except StorageUnavailableError as exc:
            stored = False
            log.error(
                "%s: %s; refusing %d message(s)", adapter, exc, len(batch) - sum(saved_before)
            )
        if stored:
            for key in keys_in_batch:
                self.recent.add(key)
            for record in records:
                INGEST_RECORDS.labels(adapter, record.topic).inc()
        replies = []
        for outcome, was_saved in zip(batch, saved_before, strict=True):
            if was_saved:
                INGEST_MESSAGES.labels(adapter, "duplicate").inc()
                replies.append(outcome.reply)
            elif stored:
                INGEST_MESSAGES.labels(adapter, "accepted").inc()
                replies.append(outcome.reply)
            else:
                INGEST_MESSAGES.labels(adapter, "unavailable").inc()
                replies.append(outcome.unavailable_reply)
        return replies

    async def _dead_letter(
        self, original: bytes, error: InputRefusedError, received_at: datetime
    ) -> bool:
        letter = DeadLetter.of(
            original,
            source=self.codec.adapter,
            reason=error.reason,
            detail=str(error),
            received_at=received_at,
        )
        try:
            await self.gateway.dead_letter(letter)
        except StorageUnavailableError as exc:
            log.error("%s: dead letter (%s) not saved: %s", self.codec.adapter, error.reason, exc)
            return False
        DEAD_LETTERS.labels(self.codec.adapter, error.reason).inc()
        log.warning("%s: refused (%s): %s", self.codec.adapter, error.reason, error)
        return True


_CLOSE = b"\x00close"  # sentinel: close the connection without a reply
