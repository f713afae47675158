"""The one way ingestion writes to Kafka: records and dead letters, counted done only when
every in-sync replica has them (acks=all, idempotent producer).

A write is a task that runs to its end on its own: a caller waits for it at most
``publish_timeout_s`` and then tells its sender "not saved" (negative ack), but the
task is never cancelled. With idempotence aiokafka retries a batch until it is
delivered, so a write that timed out may still land later; :class:`Listener` keeps
such writes in flight under their de-duplication key, so a sender's resend waits
for the first attempt instead of adding a second copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAuthorizationFailedError,
)

from schemas.deadletter import DeadLetter
from schemas.topics import TopicRegistry
from services.ingest import Outbound

log = logging.getLogger(__name__)


class StorageUnavailableError(RuntimeError):
    """Kafka did not acknowledge a write in time: nothing may be acknowledged to the sender."""


Write = asyncio.Task[None]

# After these the producer refuses every later write: the process must be restarted.
_FATAL = (OutOfOrderSequenceNumber, ProducerFenced, InvalidProducerEpoch)
_FATAL_CONFIG = (TopicAuthorizationFailedError,)


class KafkaGateway:
    """An async producer bound to one deployment's topics."""

    def __init__(
        self,
        bootstrap_servers: str,
        registry: TopicRegistry,
        *,
        client_id: str,
        publish_timeout_s: float = 15.0,
    ) -> None:
        self._registry = registry
        self.timeout_s = publish_timeout_s
        self.fatal: BaseException | None = None  # set when the producer cannot recover
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            max_batch_size=256 * 1024,
            request_timeout_ms=int(publish_timeout_s * 1000),
            metadata_max_age_ms=30_000,
        )

    async def start(self) -> None:
        await self._producer.start()

    def connected(self) -> bool:
        """Kafka reachable: the producer holds a live broker connection and has not failed."""
        if self.fatal is not None:
            return False
        conns = getattr(self._producer.client, "_conns", {})
        return any(conn.connected() for conn in list(conns.values()))

    async def stop(self) -> None:
        """Flush what is still queued (bounded by the producer's timeouts), then close."""
        await self._producer.stop()

    def start_publish(self, records: Sequence[Outbound]) -> Write:
        """Begin writing ``records`` in order; the task ends when Kafka has every one."""
        writes = [(self._registry.name(r.topic), r.key, r.value()) for r in records]
        return self._start(writes)

    async def publish(self, records: Sequence[Outbound]) -> None:
        """Write ``records``; :class:`StorageUnavailableError` unless acknowledged in time."""
        await self.settle(self.start_publish(records))

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Write a dead letter (keyed by its source), acknowledged in time or an error."""
        value = letter.model_dump_json().encode()
        await self.settle(self._start([(self._registry.deadletter, letter.source, value)]))

    async def settle(self, write: Write) -> None:
        """Wait for one write; :class:`StorageUnavailableError` if it failed or is late."""
        if write not in await self.wait_for_writes([write]):
            detail = "no acknowledgement" if not write.done() else _failure(write)
            raise StorageUnavailableError(
                f"Kafka did not acknowledge the write within {self.timeout_s:g} s: {detail}"
            )

    async def wait_for_writes(self, writes: Iterable[Write]) -> set[Write]:
        """The writes Kafka acknowledged within the timeout (the others keep running)."""
        pending = set(writes)
        if not pending:
            return set()
        done, _ = await asyncio.wait(pending, timeout=self.timeout_s)
        return {w for w in done if not w.cancelled() and w.exception() is None}

    def _start(self, writes: Sequence[tuple[str, str, bytes]]) -> Write:
        task = asyncio.ensure_future(self._send_all(writes))
        task.add_done_callback(self._after)
        return task

    def _after(self, write: Write) -> None:
        _log_failure(write)
        if not write.cancelled() and isinstance(write.exception(), _FATAL + _FATAL_CONFIG):
            self.fatal = self.fatal or write.exception()

    async def _send_all(self, writes: Sequence[tuple[str, str, bytes]]) -> None:
        futures = [
            await self._producer.send(topic, value, key=key.encode())
            for topic, key, value in writes
        ]
        await asyncio.gather(*futures)


def _failure(write: Write) -> str:
    if write.cancelled():
        return "cancelled"
    exc = write.exception()
    return f"{type(exc).__name__}: {exc}" if exc else "ok"


def _log_failure(write: Write) -> None:
    if not write.cancelled() and (exc := write.exception()) is not None:
        level = logging.WARNING if isinstance(exc, KafkaError) else logging.ERROR
        log.log(level, "a Kafka write failed: %s", _failure(write))


def content_digest(records: Sequence[Outbound]) -> str:
    """What a message says, without when it was received: resends of it digest alike.

    >>> from datetime import UTC, datetime
    >>> from schemas.context import Weight, ContextEvent
    >>> from schemas.common import SourceInfo
    >>> def weight(received_hour: int) -> Outbound:
    ...     event = Weight(patient_id="p1", observed_at=datetime(2026, 1, 1, tzinfo=UTC),
    ...         received_at=datetime(2026, 1, 1, received_hour, tzinfo=UTC),
    ...         source=SourceInfo(adapter="context"), weight_kg=70)
    ...     return Outbound("context", "p1", ContextEvent(event))
    >>> content_digest([weight(1)]) == content_digest([weight(2)])
    True
    """
    digest = hashlib.sha256()
    for record in records:
        fields = record.payload.model_dump(mode="json")
        if isinstance(fields, dict):
            fields.pop("received_at", None)
        digest.update(json.dumps([record.topic, record.key, fields], sort_keys=True).encode())
    return digest.hexdigest()


class RecentKeys:
    """The last ``capacity`` de-duplication keys saved, with what they said (a digest).

    Keys are stored hashed (bounded memory whatever senders put in MSH-10). In memory:
    a restarted listener may publish a resent message once more, which is harmless
    downstream (same event time, same content; the worker ignores late samples).

    >>> seen = RecentKeys(capacity=2)
    >>> seen.add("a", "1"); seen.add("b", "2"); seen.add("c", "3")
    >>> seen.get("a"), seen.get("b"), seen.get("c")
    (None, '2', '3')
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._digests: OrderedDict[bytes, str] = OrderedDict()

    @staticmethod
    def _hashed(key: str) -> bytes:
        return hashlib.sha256(key.encode()).digest()

    def get(self, key: str) -> str | None:
        """The digest saved under ``key``, if it is remembered."""
        return self._digests.get(self._hashed(key))

    def add(self, key: str, digest: str) -> None:
        hashed = self._hashed(key)
        self._digests[hashed] = digest
        self._digests.move_to_end(hashed)
        while len(self._digests) > self._capacity:
            self._digests.popitem(last=False)
