"""Pieces of a real stack for integration tests: topics, worker processes, consumers.

Every test gets its own topic prefix and consumer group; every process it starts is
registered so the session can prove none is left behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from schemas.alerts import AlertEvent
from schemas.topics import TopicRegistry
from services import procs
from services.kafka_io import consumer_group_lag, create_topics
from services.kafka_local import free_port

STARTED_PIDS: list[int] = []
"""Every process the test session started; checked dead at session end."""


def unique_prefix(tag: str) -> str:
    return f"t{uuid.uuid4().hex[:8]}-{tag}."


@dataclass
class Stack:
    """One isolated deployment on the session broker: prefix, app id, data dir."""

    bootstrap: str
    workdir: Path
    prefix: str
    partitions: int = 4
    app_id: str = field(default_factory=lambda: f"vigil-test-{uuid.uuid4().hex[:8]}")
    metrics_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def registry(self) -> TopicRegistry:
        return TopicRegistry(prefix=self.prefix, partitions=self.partitions)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "VIGIL_TOPIC_PREFIX": self.prefix,
            "VIGIL_PARTITIONS": str(self.partitions),
            "VIGIL_APP_ID": self.app_id,
            "VIGIL_DATA_DIR": str(self.workdir),
            "VIGIL_METRICS_PORT": str(self.metrics_port),
            "VIGIL_INGEST_METRICS_PORT": "0",
        }

    def create_topics(self) -> None:
        create_topics(self.bootstrap, self.registry)

    def vigil(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a ``vigil`` command to completion (as a user would)."""
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def start_worker(
        self, name: str = "worker", *, data_dir: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``vigil worker``; ``data_dir`` gives it a local store of its own."""
        log = self.workdir / f"{name}.log"
        env = self.env() | ({"VIGIL_DATA_DIR": str(data_dir)} if data_dir else {})
        proc = procs.spawn([sys.executable, "-m", "services.cli", "worker"], env=env, log_path=log)
        STARTED_PIDS.append(proc.pid)
        self.processes.append(proc)
        return proc

    def start_listener(
        self, kind: str, *extra: str, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], int]:
        """Start ``vigil <kind> listen --port 0``; returns the process and its port."""
        log = self.workdir / f"listen-{kind}.log"
        proc = procs.spawn(
            [sys.executable, "-m", "services.cli", kind, "listen", "--port", "0", *extra],
            env=self.env() | (env or {}),
            log_path=log,
        )
        STARTED_PIDS.append(proc.pid)
        self.processes.append(proc)
        found: list[int] = []

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{kind} listener exited {proc.returncode}:\n{log.read_text()}"
                )
            match = re.search(rf"^{kind} listening on \S+:(\d+)$", log.read_text(), re.MULTILINE)
            if match:
                found.append(int(match.group(1)))
            return bool(found)

        wait_for(listening, 60, f"the {kind} listener", on_timeout=lambda: log.read_text())
        return proc, found[0]

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            procs.stop(proc, timeout_s=30)

    def worker_log(self, name: str | None = None, tail_chars: int | None = 4000) -> str:
        """The tail of one worker's log (all of it: ``tail_chars=None``), or of every
        worker's when ``name`` is None."""
        paths = [self.workdir / f"{name}.log"] if name else sorted(self.workdir.glob("*.log"))
        start = -tail_chars if tail_chars else 0
        tails = [
            f"--- {p.name}\n{p.read_text(errors='replace')[start:]}" for p in paths if p.exists()
        ]
        return "\n".join(tails) or "(no log)"

    def metric(self, name: str, labels: str = "") -> float | None:
        """A series' value from the worker's /metrics; None while it is not serving it."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$"
        match = re.search(pattern, text, re.MULTILINE)
        return float(match.group(1)) if match else None

    def metrics_report(self, prefix: str = "vigil_records_") -> str:
        """The worker's series named ``prefix``..., for a failure message."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError as exc:
            return f"(no metrics: {exc})"
        wanted = ("vigil_samples_in_total", prefix)
        return "\n".join(
            line for line in text.splitlines() if line.startswith(wanted) and "_created" not in line
        )

    def lag(self, base_topic: str) -> int | None:
        """Unprocessed records of the worker's group on a topic (None before it commits)."""
        return consumer_group_lag(self.bootstrap, self.app_id, self.registry.name(base_topic))

    def wait_until_processed(self, base_topic: str, timeout_s: float = 180) -> None:
        wait_for(
            lambda: self.lag(base_topic) == 0,
            timeout_s,
            f"worker to drain {base_topic}",
            on_timeout=lambda: f"{self.offsets_report(base_topic)}\n{self.worker_log()}",
        )

    def published(self, base_topic: str) -> int:
        """Records on a topic (its end offsets summed over partitions)."""
        topic = self.registry.name(base_topic)
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(self.partitions)])
        finally:
            consumer.close()
        return sum(ends.values())

    def offsets_report(self, base_topic: str) -> str:
        """End offsets and the group's committed offsets, for a failure message."""
        topic = self.registry.name(base_topic)
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(self.partitions)])
            committed = admin.list_group_offsets(self.app_id).get(self.app_id, {})
        finally:
            consumer.close()
            admin.close()
        return "; ".join(
            f"{tp.topic}[{tp.partition}] end {end} committed "
            f"{committed[tp].offset if tp in committed else None}"
            for tp, end in sorted(ends.items())
        )

    def wait_for_alert(self, phase: str, timeout_s: float = 120) -> list[AlertEvent]:
        """Alert events read until one with ``phase`` has arrived."""
        found: list[AlertEvent] = []

        def arrived() -> bool:
            found[:] = [AlertEvent.model_validate_json(v) for v in self.read_all("alerts", 1)]
            return any(a.phase == phase for a in found)

        wait_for(arrived, timeout_s, f"an alert {phase} event", on_timeout=self.worker_log)
        return found

    def read_all(self, base_topic: str, idle_s: float = 3.0, timeout_s: float = 60) -> list[bytes]:
        """Every record value on a topic, read until nothing new arrives for ``idle_s``."""
        return [value for _key, value in self.read_records(base_topic, idle_s, timeout_s)]

    def read_records(
        self, base_topic: str, idle_s: float = 3.0, timeout_s: float = 60
    ) -> list[tuple[bytes | None, bytes]]:
        consumer = KafkaConsumer(
            self.registry.name(base_topic),
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        records: list[tuple[bytes | None, bytes]] = []
        try:
            deadline = time.monotonic() + timeout_s
            last = time.monotonic()
            while time.monotonic() - last < idle_s and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=250).values():
                    for record in batch:
                        records.append((record.key, record.value))
                        last = time.monotonic()
        finally:
            consumer.close()
        return records


def wait_for(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    on_timeout: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    detail = f"\n{on_timeout()}" if on_timeout else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
