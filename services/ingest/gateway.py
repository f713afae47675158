"""The one way ingestion writes to Kafka: records and dead letters, counted done only when
every in-sync replica has them (acks=all, idempotent producer).

An adapter tells its sender "saved" only after :meth:`KafkaGateway.publish` returned;
any failure or a timeout raises :class:`StorageUnavailableError` so the adapter can
refuse instead (the sender keeps the message and resends).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.deadletter import DeadLetter
from schemas.topics import TopicRegistry
from services.ingest import Outbound

log = logging.getLogger(__name__)


class StorageUnavailableError(RuntimeError):
    """Kafka did not acknowledge a write in time: nothing may be acknowledged to the sender."""


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
        self._timeout_s = publish_timeout_s
        timeout_ms = int(publish_timeout_s * 1000)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            max_batch_size=256 * 1024,
            request_timeout_ms=timeout_ms,
            metadata_max_age_ms=30_000,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, records: Sequence[Outbound]) -> None:
        """Write ``records`` (in order); return once Kafka acknowledged every one of them."""
        await self._send_all([(self._registry.name(r.topic), r.key, r.value()) for r in records])

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Write a dead letter (keyed by its source); return once Kafka acknowledged it."""
        await self._send_all(
            [(self._registry.deadletter, letter.source, letter.model_dump_json().encode())]
        )

    async def _send_all(self, writes: Sequence[tuple[str, str, bytes]]) -> None:
        async def send_and_confirm() -> None:
            futures = [
                await self._producer.send(topic, value, key=key.encode())
                for topic, key, value in writes
            ]
            await asyncio.gather(*futures)

        try:
            await asyncio.wait_for(send_and_confirm(), self._timeout_s)
        except (KafkaError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise StorageUnavailableError(f"Kafka did not acknowledge the write: {detail}") from exc


class RecentKeys:
    """The last ``capacity`` de-duplication keys acknowledged (e.g. HL7 MSH-10 per sender).

    In memory: a restarted listener may publish a resent message once more, which is
    harmless downstream (same event time, same content; the worker ignores late
    samples).

    >>> seen = RecentKeys(capacity=2)
    >>> seen.add("a"); seen.add("b"); seen.add("c")
    >>> "a" in seen, "b" in seen, "c" in seen
    (False, True, True)
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
