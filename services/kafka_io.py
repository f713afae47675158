"""Thin Kafka I/O shared by the CLI commands: topic creation, producers, consumers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.topics import TopicRegistry

log = logging.getLogger(__name__)


class TopicLayoutError(RuntimeError):
    """Topics are missing or have another partition count than the registry says."""


def check_topics(
    bootstrap_servers: str, registry: TopicRegistry, base_names: Iterable[str]
) -> None:
    """Fail fast, with a clear message, unless these topics exist as the registry says."""
    wanted = {registry.name(b): registry.partitions_of(b) for b in base_names}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="vigil-admin")
    try:
        found = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(wanted))}
    except KafkaError as exc:
        raise TopicLayoutError(f"cannot describe topics {sorted(wanted)}: {exc}") from exc
    finally:
        admin.close()
    problems = [
        f"{name} is missing" if found.get(name, 0) == 0
        else f"{name} has {found[name]} partitions, expected {count}"
        for name, count in wanted.items()
        if found.get(name) != count
    ]  # fmt: skip
    if problems:
        raise TopicLayoutError(
            "; ".join(problems) + " (create topics with `vigil topics create`; VIGIL_PARTITIONS"
            " must match the existing topics)"
        )


def create_topics(
    bootstrap_servers: str, registry: TopicRegistry, only: Iterable[str] | None = None
) -> tuple[list[str], list[str]]:
    """Create the registry's topics; returns (created, already existing) names.

    Raises :class:`TopicLayoutError` when an existing topic has another partition count.
    """
    base_names = [s.base_name for s in registry if only is None or s.base_name in set(only)]
    new_topics = [
        NewTopic(
            name=registry.name(base_name),
            num_partitions=registry.partitions_of(base_name),
            replication_factor=registry.replication_factor,
            topic_configs=registry.configs(base_name),
        )
        for base_name in base_names
    ]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="vigil-admin")
    try:
        existing = set(admin.list_topics())
        to_create = [t for t in new_topics if t.name not in existing]
        created: list[str] = []
        for topic in to_create:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                existing.add(topic.name)
    finally:
        admin.close()
    _check_after_create(bootstrap_servers, registry, base_names, just_created=bool(created))
    return created, sorted(t.name for t in new_topics if t.name in existing)


def _check_after_create(
    bootstrap_servers: str, registry: TopicRegistry, base_names: list[str], *, just_created: bool
) -> None:
    """Check the layout; new topics may take a moment to appear in every broker's metadata."""
    deadline = time.monotonic() + (15.0 if just_created else 0.0)
    while True:
        try:
            check_topics(bootstrap_servers, registry, base_names)
            return
        except TopicLayoutError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)


def delete_topics(bootstrap_servers: str, starting_with: Iterable[str]) -> list[str]:
    """Delete every topic whose name starts with one of ``starting_with`` (a deployment's
    prefix, a faust app id's internal topics); returns the names deleted."""
    prefixes = tuple(starting_with)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="vigil-admin")
    try:
        doomed = sorted(t for t in admin.list_topics() if t.startswith(prefixes))
        if doomed:
            admin.delete_topics(doomed)
    finally:
        admin.close()
    return doomed


def reliable_producer(bootstrap_servers: str, *, client_id: str) -> KafkaProducer:
    """A producer that counts a write done only when every in-sync replica has it."""
    return KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=256 * 1024,
        compression_type=None,
    )


def topic_consumer(
    bootstrap_servers: str,
    topic: str,
    *,
    from_beginning: bool,
    group_id: str | None = None,
    client_id: str = "vigil-cli",
) -> KafkaConsumer:
    """A consumer of one topic; without a group it reads every partition itself."""
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group_id is not None,
        consumer_timeout_ms=200,
    )


def consumer_group_lag(bootstrap_servers: str, group_id: str, topic: str) -> int | None:
    """Records of ``topic`` that consumer group ``group_id`` has not committed yet.

    None while the group has not committed on every non-empty partition (or its
    coordinator is not available yet): "not started" is not "caught up".
    """
    return consumer_group_lags(bootstrap_servers, group_id, [topic])[topic]


def consumer_group_lags(
    bootstrap_servers: str, group_id: str, topics: Iterable[str]
) -> dict[str, int | None]:
    """:func:`consumer_group_lag` of several topics, with one admin client and one
    consumer for all of them."""
    lags: dict[str, int | None] = {topic: None for topic in topics}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="vigil-lag")
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, client_id="vigil-lag")
    try:
        committed = admin.list_group_offsets(group_id).get(group_id, {})
        for topic in lags:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            ends = consumer.end_offsets(parts)
            lag: int | None = 0
            for tp in parts:
                if ends[tp] == 0:
                    continue
                meta = committed.get(tp)
                if meta is None or meta.offset < 0:
                    lag = None
                    break
                lag = (lag or 0) + ends[tp] - meta.offset
            lags[topic] = lag
    except KafkaError as exc:
        log.debug("lag of %s on %s not available yet: %s", group_id, sorted(lags), exc)
    finally:
        consumer.close()
        admin.close()
    return lags
