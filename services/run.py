"""``vigil run``: the embedded default, one process tree the user can stop with Ctrl-C.

Starts a fresh local Kafka (unless KAFKA_BOOTSTRAP_SERVERS is given, in which case a
run-specific topic prefix and app id keep the demo apart from everything else),
creates the topics, starts the worker, the ingestion listeners (HL7/MLLP, NIRS, CRRT,
context; on their configured ports, or free ones when those are taken) and a
simulated ICU as child processes,
prints alerts as they come, and stops everything, children first, on Ctrl-C,
SIGTERM, a child's exit, or after ``seconds``. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from schemas.alerts import AlertEvent
from services import procs
from services.alerts_tail import format_alert, tail_alerts
from services.cli_kafka import local_kafka_from_settings
from services.config import Settings
from services.display.auth import DisplayConfigError, UsersFileError
from services.display.server import demo_display_settings, start_display_thread
from services.kafka_io import create_topics
from services.kafka_local import KafkaProvisioningError, LocalKafka, free_port, wait_for_broker


@dataclass
class _Child:
    name: str
    alive: Callable[[], bool]
    log: Path


def _process_alive(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: proc.poll() is None


def _broker_alive(broker: LocalKafka) -> Callable[[], bool]:
    return lambda: broker.pid is not None


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _usable_port(host: str, port: int) -> int:
    """``port`` if it can be bound now, else any free one (a demo must not fail on it)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return free_port(host)
    return port


def run_system(settings: Settings, *, beds: int, speed: str, seconds: float | None) -> int:
    """Run broker, worker and simulator until stopped; returns the exit code."""
    run_dir = settings.data_dir / "demo"
    logs = run_dir / "logs"
    stop = threading.Event()
    started = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        # While starting (or on a second signal) interrupt whatever is in progress;
        # once running, ask the main loop to stop in order.
        if not started.is_set() or stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    broker: LocalKafka | None = None
    processes: list[subprocess.Popen[bytes]] = []
    children: list[_Child] = []
    failed: _Child | None = None
    try:
        if settings.uses_local_kafka:
            shutil.rmtree(run_dir, ignore_errors=True)
            settings = settings.model_copy(update={"kafka_data_dir": run_dir / "kafka"})
            broker = local_kafka_from_settings(settings)
            broker.ensure_jars()
            took = broker.start(timeout_s=settings.kafka_start_timeout_s, die_with_parent=True)
            click.echo(f"Kafka ready on {broker.bootstrap} in {took:.1f} s")
            children.append(_Child("kafka", _broker_alive(broker), broker.config.log_file))
        else:
            stamp = f"{datetime.now(UTC):%Y%m%d%H%M%S}"
            settings = settings.model_copy(
                update={"topic_prefix": f"vigil-demo-{stamp}.", "app_id": f"vigil-demo-{stamp}"}
            )
            wait_for_broker(settings.bootstrap_servers, timeout_s=30)
            click.echo(
                f"using {settings.bootstrap_servers}: topics {settings.topic_prefix}*, "
                f"consumer group {settings.app_id}"
            )
        created, _ = create_topics(settings.bootstrap_servers, settings.topics)
        click.echo(f"{len(created)} topics created ({settings.topic_prefix}*)")

        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "VIGIL_TOPIC_PREFIX": settings.topic_prefix,
            "VIGIL_APP_ID": settings.app_id,
            "VIGIL_DATA_DIR": str(run_dir),
        }
        vigil = [sys.executable, "-m", "services.cli"]
        host = settings.ingest_host
        ports = {
            kind: _usable_port(host, port)
            for kind, port in (
                ("hl7", settings.hl7_port),
                ("nirs", settings.nirs_port),
                ("crrt", settings.crrt_port),
                ("context", settings.context_port),
            )
        }
        listen = [*vigil, "listen", *(a for k, p in ports.items() for a in (f"--{k}-port", str(p)))]
        risk = [*vigil, "risk", "--outcome", "mods_progression_6h", "--metrics-port", "0"]
        for name, argv in (
            ("worker", [*vigil, "worker"]),
            ("risk agent", risk),
            ("listeners", listen),
            ("simulator", [*vigil, "simulate", "--beds", str(beds), "--speed", speed]),
        ):
            log = logs / f"{name}.log"
            proc = procs.spawn(argv, env=env, log_path=log)
            processes.append(proc)
            children.append(_Child(name, _process_alive(proc), log))
        display_settings = demo_display_settings()  # development unless VIGIL_ENV is set
        display_thread = start_display_thread(
            settings,
            stop=stop,
            display=display_settings,
            port=_usable_port(display_settings.display_host, display_settings.display_port),
            echo=click.echo,  # the URL, and in development the demo users' passwords
        )
        children.append(_Child("display", display_thread.is_alive, logs / "display.log"))
        click.echo(
            f"worker, risk agent, listeners and simulator ({beds} beds, speed {speed}) started;"
            f" logs in {logs}\n"
            f"send HL7 v2 (MLLP) to {host}:{ports['hl7']}, NIRS lines to {host}:{ports['nirs']},"
            f" CRRT lines to {host}:{ports['crrt']}, context lines to {host}:{ports['context']}\n"
            f"metrics: http://{settings.metrics_host}:{settings.metrics_port}/metrics\n"
            "waiting for alerts (Ctrl-C stops everything)..."
        )
        started.set()

        def watch() -> None:
            nonlocal failed
            deadline = time.monotonic() + seconds if seconds else None
            while not stop.wait(0.5):
                if deadline is not None and time.monotonic() >= deadline:
                    stop.set()
                for child in children:
                    if not child.alive():
                        failed = child
                        stop.set()

        threading.Thread(target=watch, daemon=True, name="watchdog").start()
        for item in tail_alerts(
            settings.bootstrap_servers,
            settings.topics.alerts,
            from_beginning=True,
            max_events=None,
            timeout_s=None,
            should_stop=stop.is_set,
        ):
            if isinstance(item, AlertEvent):
                click.echo(format_alert(item))
        if failed is not None:
            click.echo(f"{failed.name} stopped unexpectedly; last lines of {failed.log}:", err=True)
            click.echo(_log_tail(failed.log), err=True)
            return 1
        return 0
    except (KafkaProvisioningError, DisplayConfigError, UsersFileError) as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        started.clear()  # from here a further Ctrl-C interrupts the (bounded) stops
        click.echo("stopping...", err=True)
        for proc in reversed(processes):
            procs.stop(proc, timeout_s=30)
        if broker is not None:
            broker.stop()
        click.echo("stopped.", err=True)
