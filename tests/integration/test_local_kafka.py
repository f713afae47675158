"""The project's local broker for real: its own instance on free ports in a tmp dir.

Separate from the session broker (``kafka_bootstrap``), so it exercises the lifecycle
(start, idempotent start, stop, restart on the same data) that ``vigil kafka`` relies on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka_fixture import unavailable

from services.config import Settings
from services.kafka_local import (
    KafkaProvisioningError,
    LocalKafka,
    LocalKafkaConfig,
    free_port,
)
from services.procs import pid_alive

RECEIVE_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKafka, float]]:
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    kafka = LocalKafka(
        LocalKafkaConfig(
            data_dir=tmp_path_factory.mktemp("local-kafka"),
            cache_dir=Settings().kafka_cache_dir,
            port=port,
            controller_port=controller_port,
            heap="512m",
        )
    )
    try:
        seconds = kafka.start(timeout_s=90, die_with_parent=True)
    except KafkaProvisioningError as exc:
        unavailable(f"local broker: {exc}")
    try:
        yield kafka, seconds
    finally:
        kafka.stop()


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics(
            {topic: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True
        )
    finally:
        admin.close()


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        producer.send(topic, key=key, value=value).get(timeout=15)
    finally:
        producer.close(timeout=5)


def _consume_one(bootstrap: str, topic: str) -> tuple[bytes, bytes]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"it-local-kafka-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=RECEIVE_TIMEOUT_MS,
    )
    try:
        for record in consumer:
            return record.key, record.value
    finally:
        consumer.close()
    pytest.fail(f"no record arrived on {topic} within {RECEIVE_TIMEOUT_MS} ms")


def test_start_reports_its_duration(broker: tuple[LocalKafka, float]) -> None:
    kafka, seconds = broker
    assert 0.0 < seconds < 90
    assert (kafka.config.log_dirs / "meta.properties").is_file()
    print(f"local Kafka started in {seconds:.1f} s")


def test_status_answers(broker: tuple[LocalKafka, float]) -> None:
    kafka, _ = broker
    state = kafka.status()
    assert state.running
    assert state.answering
    assert state.bootstrap == kafka.bootstrap
    assert state.pid == int(kafka.config.pid_file.read_text())


def test_second_start_is_idempotent(broker: tuple[LocalKafka, float]) -> None:
    kafka, _ = broker
    pid = kafka.pid
    assert kafka.start(timeout_s=10) == 0.0
    assert kafka.pid == pid
    # Another object for the same data dir (another `vigil kafka start`) sees it too.
    assert LocalKafka(kafka.config).start(timeout_s=10) == 0.0


def test_lost_pid_file_is_recovered(broker: tuple[LocalKafka, float]) -> None:
    kafka, _ = broker
    pid = kafka.pid
    kafka.config.pid_file.unlink()
    assert LocalKafka(kafka.config).pid == pid  # found through /proc, pid file rewritten
    assert kafka.config.pid_file.read_text().strip() == str(pid)


def test_produce_and_consume_round_trip(broker: tuple[LocalKafka, float]) -> None:
    kafka, _ = broker
    topic = f"it-roundtrip-{uuid.uuid4().hex[:8]}"
    _create_topic(kafka.bootstrap, topic)
    _produce(kafka.bootstrap, topic, b"bed-7", b'{"hr": 112}')
    assert _consume_one(kafka.bootstrap, topic) == (b"bed-7", b'{"hr": 112}')


def test_stop_then_restart_on_the_same_data(broker: tuple[LocalKafka, float]) -> None:
    kafka, _ = broker
    cfg = kafka.config
    topic = f"it-persist-{uuid.uuid4().hex[:8]}"
    _create_topic(kafka.bootstrap, topic)
    _produce(kafka.bootstrap, topic, b"bed-3", b"kept across restarts")
    meta = (cfg.log_dirs / "meta.properties").read_text()
    pid = kafka.pid
    assert pid is not None

    assert kafka.stop(timeout_s=30) is True
    assert not pid_alive(pid)
    assert not cfg.pid_file.exists()
    state = kafka.status()
    assert (state.running, state.answering) == (False, False)
    assert kafka.stop() is False

    seconds = kafka.start(timeout_s=60, die_with_parent=True)
    assert seconds > 0.0
    assert kafka.pid not in (None, pid)
    assert (cfg.log_dirs / "meta.properties").read_text() == meta  # not reformatted
    assert cfg.log_file.read_text().count(": formatting ") == 1
    assert _consume_one(kafka.bootstrap, topic) == (b"bed-3", b"kept across restarts")


def _fresh(tmp_path_factory: pytest.TempPathFactory, name: str) -> LocalKafka:
    port, controller_port = free_port(), free_port()
    return LocalKafka(
        LocalKafkaConfig(
            data_dir=tmp_path_factory.mktemp(name),
            cache_dir=Settings().kafka_cache_dir,
            port=port,
            controller_port=controller_port if controller_port != port else free_port(),
            heap="256m",
        )
    )


@pytest.mark.usefixtures("broker")  # skips like the rest when no local broker can run
def test_a_broker_dying_at_start_reports_its_log(tmp_path_factory: pytest.TempPathFactory) -> None:
    kafka = _fresh(tmp_path_factory, "dying-kafka")
    kafka.config.log_dirs.mkdir(parents=True)
    (kafka.config.log_dirs / "meta.properties").write_text(
        "version=1\nnode.id=7\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\n"
    )
    with pytest.raises(KafkaProvisioningError, match="exited with code") as err:
        kafka.start(timeout_s=60, die_with_parent=True)
    assert "doesn't match previous node id" in str(err.value)  # from the log tail
    assert kafka.pid is None
    assert not kafka.config.pid_file.exists()


@pytest.mark.usefixtures("broker")
def test_a_start_timeout_stops_the_broker(tmp_path_factory: pytest.TempPathFactory) -> None:
    kafka = _fresh(tmp_path_factory, "slow-kafka")
    with pytest.raises(KafkaProvisioningError, match=r"did not answer .* it was stopped"):
        kafka.start(timeout_s=0.2, die_with_parent=True)
    assert kafka.pid is None
    assert not kafka.config.pid_file.exists()
