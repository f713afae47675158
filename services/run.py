"""``vigil run``: the embedded default, one process tree the user can stop with Ctrl-C.

Starts a fresh local Kafka (unless KAFKA_BOOTSTRAP_SERVERS is given, in which case a
run-specific topic prefix keeps runs apart), creates the topics, starts the worker
and a simulated ICU as child processes, prints alerts as they come, and stops
everything, children first, on Ctrl-C, SIGTERM or after ``seconds``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from schemas.alerts import AlertEvent
from services import procs
from services.alerts_tail import format_alert, tail_alerts
from services.cli_kafka import local_kafka_from_settings
from services.config import Settings
from services.kafka_io import create_topics
from services.kafka_local import KafkaProvisioningError, LocalKafka, wait_for_broker


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_system(settings: Settings, *, beds: int, speed: str, seconds: float | None) -> int:
    """Run broker, worker and simulator until stopped; returns the exit code."""
    run_dir = settings.data_dir / "demo"
    logs = run_dir / "logs"
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    broker: LocalKafka | None = None
    children: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        if settings.uses_local_kafka:
            shutil.rmtree(run_dir, ignore_errors=True)
            settings = settings.model_copy(update={"kafka_data_dir": run_dir / "kafka"})
            broker = local_kafka_from_settings(settings)
            broker.ensure_jars()
            started = broker.start(timeout_s=settings.kafka_start_timeout_s, die_with_parent=True)
            click.echo(f"Kafka ready on {broker.bootstrap} in {started:.1f} s")
        else:
            prefix = f"vigil-demo-{datetime.now(UTC):%Y%m%d%H%M%S}."
            settings = settings.model_copy(update={"topic_prefix": prefix})
            wait_for_broker(settings.bootstrap_servers, timeout_s=30)
            click.echo(f"using {settings.bootstrap_servers}, topic prefix {prefix}")
        created, _ = create_topics(settings.bootstrap_servers, settings.topics)
        click.echo(f"{len(created)} topics created ({settings.topic_prefix}*)")

        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "VIGIL_TOPIC_PREFIX": settings.topic_prefix,
            "VIGIL_DATA_DIR": str(run_dir),
        }
        vigil = [sys.executable, "-m", "services.cli"]
        alerts = tail_alerts(
            settings.bootstrap_servers,
            settings.topics.alerts,
            from_beginning=True,
            max_events=None,
            timeout_s=None,
            should_stop=stop.is_set,
        )
        worker_log, sim_log = logs / "worker.log", logs / "simulator.log"
        children.append(
            ("worker", procs.spawn([*vigil, "worker"], env=env, log_path=worker_log), worker_log)
        )
        sim_argv = [*vigil, "simulate", "--beds", str(beds), "--speed", speed]
        children.append(("simulator", procs.spawn(sim_argv, env=env, log_path=sim_log), sim_log))
        click.echo(
            f"worker and simulator ({beds} beds, speed {speed}) started; logs in {logs}\n"
            f"metrics: http://{settings.metrics_host}:{settings.metrics_port}/metrics\n"
            "waiting for alerts (Ctrl-C stops everything)..."
        )
        deadline = time.monotonic() + seconds if seconds else None
        watchdog = threading.Thread(
            target=_watch, args=(children, stop, deadline), daemon=True, name="watchdog"
        )
        watchdog.start()
        for item in alerts:
            if isinstance(item, AlertEvent):
                click.echo(format_alert(item))
        for name, proc, log in children:
            if proc.poll() not in (None, 0):
                click.echo(f"{name} exited with {proc.returncode}; last lines of {log}:", err=True)
                click.echo(_log_tail(log), err=True)
                return 1
        return 0
    except KafkaProvisioningError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    finally:
        click.echo("stopping...", err=True)
        for _name, proc, _log in reversed(children):
            procs.stop(proc, timeout_s=30)
        if broker is not None:
            broker.stop()
        click.echo("stopped.", err=True)


def _watch(
    children: list[tuple[str, subprocess.Popen[bytes], Path]],
    stop: threading.Event,
    deadline: float | None,
) -> None:
    """Set ``stop`` when time is up or a child has died."""
    while not stop.wait(0.5):
        if deadline is not None and time.monotonic() >= deadline:
            stop.set()
        for _name, proc, _log in children:
            if proc.poll() is not None and proc.returncode != 0:
                stop.set()
