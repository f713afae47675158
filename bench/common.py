"""What every benchmark script shares: a broker to measure against, the machine, results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from services.kafka_local import LocalKafka, LocalKafkaConfig, free_ports

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, object]:
    """When and where the figures were taken."""
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }


def git_commit() -> str | None:
    """The checkout's short commit hash, None outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def results_header(**fields: object) -> dict[str, Any]:
    """The first entries of a benchmark's results: machine(), the commit, ``fields`` in
    their order, then the load average at start."""
    return {
        **machine(),
        "commit": git_commit(),
        **fields,
        "load_average_at_start": load_average(),
    }


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    workdir: Path
    start_s: float | None  # None: an existing cluster (KAFKA_BOOTSTRAP_SERVERS)


@contextmanager
def broker(tag: str) -> Iterator[Broker]:
    """KAFKA_BOOTSTRAP_SERVERS if set, else the project's local Kafka on free ports in a
    scratch dir; stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=f"vigil-bench-{tag}-"))
    local: LocalKafka | None = None
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        start_s = None
        if not bootstrap:
            port, controller = free_ports(2)
            local = LocalKafka(LocalKafkaConfig(
                data_dir=workdir / "kafka", cache_dir=ROOT / ".cache" / "kafka",
                port=port, controller_port=controller))  # fmt: skip
            start_s = local.start(die_with_parent=True)
            bootstrap = local.bootstrap
        yield Broker(bootstrap, workdir, start_s)
    finally:
        if local is not None:
            local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def write_results(out: Path, name: str, results: dict[str, object], markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(f"written to {out / name}.json and {name}.md")


def stamp() -> str:
    """UTC time as used in result file names: 20261122T141500Z."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def load_average() -> tuple[float, float, float]:
    """The host's 1/5/15-min load average (other users of a shared machine included)."""
    one, five, fifteen = os.getloadavg()
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS), 0 when it has none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def raw_consume_rate(
    bootstrap: str, topics: Sequence[str], partitions: int, expected: int
) -> float:
    """kafka-python reading every partition of ``topics`` from the start: records/s."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = 0
    began = time.perf_counter()
    while seen < expected and time.perf_counter() - began < 300:
        for records in consumer.poll(timeout_ms=500).values():
            seen += len(records)
    elapsed = time.perf_counter() - began
    consumer.close()
    return seen / elapsed


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """--out and --stamp: results go to <out>/<name>-<stamp>.json and .md."""
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--stamp", default=None, help="file name stamp (bench/run_all.py gives one to every script)"
    )


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """A benchmark's start: --out and --stamp added, the command line parsed, clean stops
    on signals, and the workers it starts log at WARNING unless VIGIL_LOG_LEVEL is set."""
    add_output_args(parser)
    args = parser.parse_args()
    stop_cleanly_on_signals()
    os.environ.setdefault("VIGIL_LOG_LEVEL", "WARNING")  # the worker's, via Stack.env
    return args


def report_results(
    args: argparse.Namespace, name: str, results: dict[str, Any], markdown: str
) -> None:
    """Print ``markdown``; write both to <args.out>/<name>-<stamp>.json and .md, the stamp
    being --stamp or else now."""
    print(markdown)
    write_results(args.out, f"{name}-{args.stamp or stamp()}", results, markdown)


def stop_cleanly_on_signals() -> None:
    """SIGTERM and SIGINT raise in the main thread, so that every ``finally`` runs: the
    workers and the broker a benchmark started are stopped, its scratch dir removed
    (a background job starts with SIGINT ignored)."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, signal.default_int_handler)
