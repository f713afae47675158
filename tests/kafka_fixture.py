"""Where the test session's Kafka broker comes from (see KAFKA.md, "Tests").

1. ``KAFKA_BOOTSTRAP_SERVERS`` when set: it must answer within 30 s, else the session fails.
2. testcontainers' Kafka module when a Docker engine answers.
3. The project's own local broker (``services.kafka_local``) on free ports in a temporary
   data dir, with the jar cache of ``vigil kafka fetch``; it dies with the test process.

When none of them gives a broker, tests that need one are skipped, or fail when
``REQUIRE_KAFKA=1`` (CI), so a broken broker can never pass as "skipped".
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest

from services.config import Settings
from services.kafka_local import (
    KafkaProvisioningError,
    LocalKafka,
    LocalKafkaConfig,
    free_ports,
    wait_for_broker,
)

EXTERNAL_TIMEOUT_S = 30.0
# Confluent Platform 7.9 ships Apache Kafka 3.9, the version the local broker runs.
# testcontainers' KafkaContainer drives Confluent's start scripts, so it needs a cp-kafka image.
CONTAINER_IMAGE = "confluentinc/cp-kafka:7.9.1"


@dataclass(frozen=True)
class SessionBroker:
    bootstrap: str
    source: str
    start_s: float


# What the session used, for the terminal summary (conftest's pytest_terminal_summary).
SUMMARY: list[str] = []


def kafka_required() -> bool:
    return os.environ.get("REQUIRE_KAFKA", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the requesting test, or fail it when the run requires Kafka."""
    SUMMARY.append(f"kafka: no broker ({reason})")
    if kafka_required():
        pytest.fail(
            f"REQUIRE_KAFKA is set and no Kafka broker is available: {reason}", pytrace=False
        )
    pytest.skip(f"no Kafka broker: {reason}")


def _docker_kafka(reasons: list[str]) -> Any | None:
    """A started KafkaContainer, or None (with the reason) when Docker is not usable."""
    try:
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:
            from testcontainers.kafka import KafkaContainer
        container = KafkaContainer(CONTAINER_IMAGE).with_kraft()  # DockerException w/o engine
    except Exception as exc:  # ImportError, DockerException, ...: fall through
        reasons.append(f"testcontainers: {type(exc).__name__}: {str(exc)[:200]}")
        return None
    try:
        container.start(timeout=180)
    except Exception as exc:
        reasons.append(f"testcontainers: {type(exc).__name__}: {str(exc)[:200]}")
        try:
            container.stop()
        except Exception as stop_exc:
            reasons.append(f"(stopping the container failed too: {stop_exc})")
        return None
    return container


@contextmanager
def session_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionBroker]:
    settings = Settings()
    started = time.monotonic()
    if settings.kafka_bootstrap_servers:
        bootstrap = settings.kafka_bootstrap_servers
        try:
            wait_for_broker(bootstrap, EXTERNAL_TIMEOUT_S)
        except KafkaProvisioningError as exc:
            pytest.fail(f"KAFKA_BOOTSTRAP_SERVERS is set but unusable: {exc}", pytrace=False)
        broker = SessionBroker(bootstrap, "KAFKA_BOOTSTRAP_SERVERS", time.monotonic() - started)
        SUMMARY.append(f"kafka: using {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
        yield broker
        return

    reasons: list[str] = []
    container = _docker_kafka(reasons)
    if container is not None:
        try:
            bootstrap = container.get_bootstrap_server()
            seconds = time.monotonic() - started
            SUMMARY.append(
                f"kafka: testcontainers {CONTAINER_IMAGE} on {bootstrap} started in {seconds:.1f} s"
            )
            yield SessionBroker(bootstrap, f"testcontainers {CONTAINER_IMAGE}", seconds)
        finally:
            container.stop()
        return

    port, controller_port = free_ports(2)
    local = LocalKafka(
        LocalKafkaConfig(
            data_dir=tmp_path_factory.mktemp("kafka"),
            cache_dir=settings.kafka_cache_dir,
            port=port,
            controller_port=controller_port,
        )
    )
    try:
        seconds = local.start(timeout_s=settings.kafka_start_timeout_s, die_with_parent=True)
    except KafkaProvisioningError as exc:
        reasons.append(f"local broker: {exc}")
        unavailable("; ".join(reasons))
    cfg = local.config
    SUMMARY.append(
        f"kafka: local Kafka {cfg.kafka_version} on {local.bootstrap} started in {seconds:.1f} s "
        f"(pid {local.pid}, log {cfg.log_file})"
    )
    try:
        yield SessionBroker(local.bootstrap, f"local Kafka {cfg.kafka_version}", seconds)
    finally:
        local.stop()
