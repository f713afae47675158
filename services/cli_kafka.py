"""``vigil kafka ...``: fetch, start, stop and check the project's local Kafka broker.

With ``KAFKA_BOOTSTRAP_SERVERS`` set, Vigil uses that cluster instead: ``start`` and
``status`` only check that it answers, and ``fetch`` has nothing to download.
"""

from __future__ import annotations

import click

from services.cli_common import load_settings
from services.config import Settings
from services.kafka_local import (
    KafkaProvisioningError,
    LocalKafka,
    LocalKafkaConfig,
    wait_for_broker,
)

# How long `start` / `status` wait for a cluster given by KAFKA_BOOTSTRAP_SERVERS.
EXTERNAL_CHECK_TIMEOUT_S = 30.0
EXIT_NOT_RUNNING = 3


def local_kafka_from_settings(settings: Settings) -> LocalKafka:
    """The local broker that ``settings`` describe (whether or not it is used)."""
    return LocalKafka(
        LocalKafkaConfig(
            host=settings.kafka_host,
            port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            data_dir=settings.kafka_data_dir,
            cache_dir=settings.kafka_cache_dir,
        )
    )


@click.group("kafka")
def kafka_group() -> None:
    """The local Kafka broker (KRaft), or the cluster given by KAFKA_BOOTSTRAP_SERVERS."""


@kafka_group.command("fetch")
def fetch() -> None:
    """Download the broker's jars from Maven Central once (later runs are offline)."""
    settings = load_settings()
    if not settings.uses_local_kafka:
        click.echo(
            f"KAFKA_BOOTSTRAP_SERVERS is set ({settings.bootstrap_servers}); "
            "the local broker's jars are not needed."
        )
        return
    kafka = local_kafka_from_settings(settings)
    try:
        libs = kafka.ensure_jars()
    except KafkaProvisioningError as exc:
        raise click.ClickException(str(exc)) from exc
    jars = sum(1 for _ in libs.glob("*.jar"))
    click.echo(f"Kafka {kafka.config.kafka_version} jars ready in {libs} ({jars} jars)")


@kafka_group.command("start")
def start() -> None:
    """Start the local broker in the background and wait until it answers."""
    settings = load_settings()
    try:
        if not settings.uses_local_kafka:
            wait_for_broker(settings.bootstrap_servers, EXTERNAL_CHECK_TIMEOUT_S)
            click.echo(
                f"Using the existing Kafka cluster at {settings.bootstrap_servers} "
                "(KAFKA_BOOTSTRAP_SERVERS); it answers. No local broker started."
            )
            return
        kafka = local_kafka_from_settings(settings)
        seconds = kafka.start(timeout_s=settings.kafka_start_timeout_s)
    except KafkaProvisioningError as exc:
        raise click.ClickException(str(exc)) from exc
    cfg = kafka.config
    where = f"(pid {kafka.pid}, data dir {cfg.data_dir})"
    if seconds == 0.0:
        click.echo(f"Kafka {cfg.kafka_version} already running on {cfg.bootstrap} {where}")
    else:
        click.echo(f"Kafka {cfg.kafka_version} ready on {cfg.bootstrap} in {seconds:.1f} s {where}")


@kafka_group.command("stop")
@click.option(
    "--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds before SIGKILL."
)
def stop(timeout_s: float) -> None:
    """Stop the local broker (SIGTERM, then wait)."""
    settings = load_settings()
    kafka = local_kafka_from_settings(settings)
    pid = kafka.pid
    try:
        stopped = kafka.stop(timeout_s=timeout_s)
    except KafkaProvisioningError as exc:
        raise click.ClickException(str(exc)) from exc
    if stopped:
        click.echo(f"Stopped Kafka on {kafka.bootstrap} (pid {pid})")
    else:
        click.echo(f"Kafka on {kafka.bootstrap} was not running ({kafka.config.data_dir})")
    if not settings.uses_local_kafka:
        click.echo(
            f"KAFKA_BOOTSTRAP_SERVERS is set ({settings.bootstrap_servers}); "
            "Vigil does not manage that cluster."
        )


@kafka_group.command("status")
def status() -> None:
    """Exit 0 when the broker runs and answers, 3 otherwise."""
    settings = load_settings()
    if not settings.uses_local_kafka:
        try:
            wait_for_broker(settings.bootstrap_servers, EXTERNAL_CHECK_TIMEOUT_S)
        except KafkaProvisioningError as exc:
            click.echo(str(exc))
            raise click.exceptions.Exit(EXIT_NOT_RUNNING) from exc
        click.echo(f"Kafka cluster {settings.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS) answers")
        return
    kafka = local_kafka_from_settings(settings)
    state = kafka.status()
    if state.running and state.answering:
        click.echo(
            f"Kafka running on {state.bootstrap} (pid {state.pid}, data dir "
            f"{kafka.config.data_dir}) and answering"
        )
        return
    if state.running:
        click.echo(f"Kafka runs (pid {state.pid}) but does not answer on {state.bootstrap}")
    elif state.answering:
        click.echo(
            f"Kafka is not running from {kafka.config.data_dir}, but something else answers "
            f"on {state.bootstrap}"
        )
    else:
        click.echo(f"Kafka is not running ({state.bootstrap}, data dir {kafka.config.data_dir})")
    raise click.exceptions.Exit(EXIT_NOT_RUNNING)
