"""Benchmark of the first pipeline (vitals -> 1-min median MAP -> perfusion rule -> alerts).

Prints figures and writes them to bench/results/pipeline.json and pipeline.md:

* pure core: decode + per-patient monitor + state round trip, samples/s on one core;
* through a real broker (the project's local Kafka unless KAFKA_BOOTSTRAP_SERVERS is set):
  - baseline: raw kafka-python consume rate of the same vitals topic,
  - worker: samples/s one `vigil worker` sustains draining a pre-filled topic,
    and the ratio of the two (meaningful on a noisy machine),
  - worker resident memory per bed.

Usage: .venv/bin/python bench/pipeline.py [--beds 200] [--seconds 300]
Figures, not asserts: see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import broker, machine, raw_consume_rate, rss_bytes, write_results  # noqa: E402
from schemas.context import ContextEvent  # noqa: E402
from schemas.observations import (  # noqa: E402
    CrrtStatus,
    LabResults,
    NirsSample,
    VitalSigns,
)
from schemas.topics import TopicRegistry  # noqa: E402
from services import procs  # noqa: E402
from services.kafka_io import (  # noqa: E402
    consumer_group_lag,
    create_topics,
    reliable_producer,
)
from services.kafka_local import free_port  # noqa: E402
from services.sim.engine import IcuConfig, simulate_icu  # noqa: E402
from services.sim_publisher import publish_simulation  # noqa: E402
from services.simulator import HypotensionEpisode, SimulationConfig  # noqa: E402
from streams.offline import OfflinePipeline  # noqa: E402
from streams.rules import load_rules  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)
MODELS: dict[str, Any] = {
    "vitals": VitalSigns,
    "nirs": NirsSample,
    "crrt": CrrtStatus,
    "labs": LabResults,
    "context": ContextEvent,
}


def bench_pure_core(beds: int, seconds: int) -> dict[str, float]:
    """The worker's per-patient pipeline on every raw topic, decode included, one core."""
    config = IcuConfig(beds=beds, seed=1, start=START, duration_s=seconds)
    encoded = [
        (record.topic, record.value())
        for _t, batch in simulate_icu(config, clock=lambda: START)
        for record in batch
        if record.topic in MODELS
    ]
    pipeline = OfflinePipeline(load_rules())
    began = time.perf_counter()
    alerts = 0
    for topic, raw in encoded:
        alerts += len(pipeline.feed(topic, MODELS[topic].model_validate_json(raw)))
    elapsed = time.perf_counter() - began
    states = [json.dumps(p.to_state()) for p in pipeline.patients.values()]
    return {
        "records": len(encoded),
        "records_per_s": len(encoded) / elapsed,
        "alert_events": alerts,
        "state_json_bytes_per_bed": sum(map(len, states)) / len(states),
    }


def bench_broker(bootstrap: str, beds: int, seconds: int, workdir: Path) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    registry = TopicRegistry(prefix=prefix, partitions=4)
    create_topics(bootstrap, registry)
    config = SimulationConfig(beds=beds, seed=2, start=START, duration_s=seconds,
                              episodes=(HypotensionEpisode(1),))  # fmt: skip
    producer = reliable_producer(bootstrap, client_id="bench")
    stats = publish_simulation(config.to_icu(), producer, registry, speed=None)
    producer.close()
    total = stats.per_topic["vitals"]
    baseline = raw_consume_rate(bootstrap, [registry.vitals], registry.partitions, total)

    app_id = f"bench-worker-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "VIGIL_TOPIC_PREFIX": prefix,
           "VIGIL_APP_ID": app_id, "VIGIL_DATA_DIR": str(workdir),
           "VIGIL_METRICS_PORT": str(free_port()), "VIGIL_LOG_LEVEL": "WARNING"}  # fmt: skip
    worker = procs.spawn([sys.executable, "-m", "services.cli", "worker"], env=env,
                         log_path=workdir / "worker.log")  # fmt: skip
    try:
        time.sleep(1.0)
        idle_rss = rss_bytes(worker.pid)
        began = time.perf_counter()
        first_commit = None
        while time.perf_counter() - began < 900:
            lag = consumer_group_lag(bootstrap, app_id, registry.vitals)
            if lag is not None and first_commit is None:
                first_commit = time.perf_counter()
            if lag == 0:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"worker died; see {workdir / 'worker.log'}")
            time.sleep(0.25)
        drained = time.perf_counter()
        busy_rss = rss_bytes(worker.pid)
    finally:
        procs.stop(worker)
    start_to_drain = drained - began
    return {
        "samples": total,
        "publish_samples_per_s": stats.rate,
        "raw_consume_samples_per_s": baseline,
        "worker_samples_per_s_incl_startup": total / start_to_drain,
        "worker_samples_per_s_after_first_commit": (
            total / (drained - first_commit) if first_commit and drained > first_commit else 0.0
        ),
        "worker_vs_raw_consume": (total / start_to_drain) / baseline,
        "worker_rss_idle_mb": idle_rss / 2**20,
        "worker_rss_after_mb": busy_rss / 2**20,
        "worker_rss_per_bed_kb": max(0, busy_rss - idle_rss) / beds / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beds", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=300, help="simulated seconds per bed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    results: dict[str, object] = {
        **machine(),
        "beds": args.beds,
        "simulated_seconds": args.seconds,
    }
    print(f"pure core: {args.beds} beds x {args.seconds} s ...", flush=True)
    results["pure_core"] = bench_pure_core(args.beds, args.seconds)
    print(json.dumps(results["pure_core"], indent=2), flush=True)

    with broker("pipeline") as kafka:
        if kafka.start_s is not None:
            results["broker_start_s"] = kafka.start_s
        print(f"through the broker at {kafka.bootstrap} ...", flush=True)
        results["broker"] = bench_broker(kafka.bootstrap, args.beds, args.seconds, kafka.workdir)
        print(json.dumps(results["broker"], indent=2), flush=True)
    write_results(args.out, "pipeline", results, to_markdown(results))


def to_markdown(results: dict[str, object]) -> str:
    lines = [
        f"# Pipeline benchmark ({results['when']}, {results['machine']})",
        "",
        f"{results['beds']} beds x {results['simulated_seconds']} s of 1 Hz vitals.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for section in ("pure_core", "broker"):
        figures = results.get(section)
        if isinstance(figures, dict):
            for name, value in figures.items():
                shown = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
                lines.append(f"| {section}.{name} | {shown} |")
    if "broker_start_s" in results:
        lines.append(f"| broker_start_s | {results['broker_start_s']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
