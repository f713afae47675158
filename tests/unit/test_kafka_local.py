"""services.kafka_local without a broker: config rendering, ids, and the clear errors."""

from __future__ import annotations

import base64
import os
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import kafka_local
from services.kafka_local import (
    KafkaProvisioningError,
    LocalKafka,
    LocalKafkaConfig,
    free_port,
    new_cluster_id,
    render_server_properties,
    wait_for_broker,
)


@pytest.fixture
def config(tmp_path: Path) -> LocalKafkaConfig:
    return LocalKafkaConfig(
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
        port=free_port(),
        controller_port=free_port(),
    )


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something else (not a Vigil broker) listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)


def test_rendered_properties_use_configured_ports_and_dirs(tmp_path: Path) -> None:
    cfg = LocalKafkaConfig(
        data_dir=tmp_path / "kafka data", cache_dir=tmp_path, port=31092, controller_port=31093
    )
    props = dict(
        line.split("=", 1)
        for line in render_server_properties(cfg).splitlines()
        if line and not line.startswith("#")
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:31092,CONTROLLER://127.0.0.1:31093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:31092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:31093"
    assert props["log.dirs"] == str(tmp_path / "kafka data" / "logs")
    assert props["process.roles"] == "broker,controller"
    assert props["offsets.topic.replication.factor"] == "1"
    assert "localhost" not in render_server_properties(cfg)


def test_config_paths_are_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = LocalKafkaConfig(data_dir=Path(".run/kafka"), cache_dir=Path(".cache/kafka"))
    assert cfg.data_dir == tmp_path / ".run" / "kafka"
    assert cfg.server_properties.is_absolute()
    assert cfg.libs_dir == tmp_path / ".cache" / "kafka" / "3.9.1" / "libs"


def test_config_rejects_equal_ports_and_odd_heap(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must differ"):
        LocalKafkaConfig(data_dir=tmp_path, cache_dir=tmp_path, port=9100, controller_port=9100)
    with pytest.raises(ValueError, match="heap"):
        LocalKafkaConfig(data_dir=tmp_path, cache_dir=tmp_path, heap="1 GB")


def test_cluster_id_is_22_base64url_chars_of_a_uuid_and_random() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid)
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_port_in_use_gives_a_clear_error(config: LocalKafkaConfig, listening: int) -> None:
    cfg = LocalKafkaConfig(
        data_dir=config.data_dir,
        cache_dir=config.cache_dir,
        port=listening,
        controller_port=config.controller_port,
    )
    with pytest.raises(KafkaProvisioningError, match=f"Port {listening} on 127.0.0.1") as err:
        LocalKafka(cfg).start(timeout_s=5)
    assert "already in use" in str(err.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(err.value)
    assert not cfg.pid_file.exists()


def test_controller_port_in_use_gives_a_clear_error(
    config: LocalKafkaConfig, listening: int
) -> None:
    cfg = LocalKafkaConfig(
        data_dir=config.data_dir,
        cache_dir=config.cache_dir,
        port=config.port,
        controller_port=listening,
    )
    with pytest.raises(KafkaProvisioningError, match="controller listener"):
        LocalKafka(cfg).start(timeout_s=5)


@pytest.mark.usefixtures("no_java")
def test_missing_java_gives_a_clear_error(config: LocalKafkaConfig) -> None:
    message = re.escape(
        "Java 17+ is needed to run the local Kafka broker; install openjdk-17-jre-headless "
        "or set KAFKA_BOOTSTRAP_SERVERS to use an existing cluster"
    )
    with pytest.raises(KafkaProvisioningError, match=message):
        kafka_local.find_java()
    with pytest.raises(KafkaProvisioningError, match=message):
        LocalKafka(config).start(timeout_s=5)


def test_old_java_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(KafkaProvisioningError, match=r"Java 17\+ is needed.*is Java 11"):
        kafka_local.find_java()


def test_missing_maven_gives_a_clear_error(
    config: LocalKafkaConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_local, "find_java", lambda: "/usr/bin/java")
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)
    with pytest.raises(KafkaProvisioningError, match=r"Maven \(mvn\) is needed once"):
        LocalKafka(config).ensure_jars()


def test_maven_failure_shows_its_output(
    config: LocalKafkaConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(
        "#!/bin/sh\necho '[ERROR] Could not resolve org.apache.kafka:kafka_2.13'\nexit 1\n"
    )
    mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(kafka_local, "find_java", lambda: "/usr/bin/java")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(KafkaProvisioningError, match="Maven failed") as err:
        LocalKafka(config).ensure_jars()
    assert "Could not resolve org.apache.kafka:kafka_2.13" in str(err.value)
    assert not config.libs_dir.exists()


def test_cached_jars_skip_maven_and_java(
    config: LocalKafkaConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = LocalKafka(config)
    config.libs_dir.mkdir(parents=True)
    stamp = config.cache_dir / config.kafka_version / "libs.stamp"
    expected = kafka._expected_stamp()
    assert expected is not None
    stamp.write_text(expected)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("Maven must not run when the cache is complete")

    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)
    monkeypatch.setattr("subprocess.run", forbidden)
    assert kafka.ensure_jars() == config.libs_dir

    stamp.write_text("kafka 3.9.1\npom sha256 outdated\n")  # pom changed -> fetch again
    with pytest.raises(KafkaProvisioningError, match="Java 17"):
        kafka.ensure_jars()


def test_nothing_running(config: LocalKafkaConfig) -> None:
    kafka = LocalKafka(config)
    assert kafka.bootstrap == f"127.0.0.1:{config.port}"
    assert kafka.stop() is False
    state = kafka.status()
    assert (state.running, state.pid, state.answering) == (False, None, False)
    assert state.bootstrap == kafka.bootstrap


def test_stale_pid_file_of_another_process_is_ignored(config: LocalKafkaConfig) -> None:
    config.data_dir.mkdir(parents=True)
    config.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a Kafka broker
    kafka = LocalKafka(config)
    assert kafka.pid is None
    assert kafka.stop() is False
    assert not config.pid_file.exists()


def test_wait_for_broker_times_out_with_a_clear_error() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(KafkaProvisioningError, match=f"No Kafka broker answered at {bootstrap}"):
        wait_for_broker(bootstrap, timeout_s=1.0)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
