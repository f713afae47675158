"""Memory per bed after 24 h of simulated time.

A 24-h run of hundreds of beds through the broker takes far longer than 24 h of CPU on
this machine (about 2 records per bed-second), so the script measures two things, each
labelled for what it is:

1. in-process (streams/offline.py, no Kafka): --beds beds of bench/worker.py's load
   (1 Hz vitals, 1 Hz NIRS, CRRT every 10 s, labs and charting, fast_plan scenarios) are
   stepped for --hours of simulated time and fed to the worker's per-patient pipeline
   (OfflinePipeline), one process per core, a share of the beds each. At every
   simulated hour each bed's PatientState is measured: the Python heap it occupies
   (tracemalloc while ``from_state`` rebuilds it from its snapshot, as the worker does:
   the objects themselves, nothing else), its pickled size where it pickles, and the
   JSON state snapshot the worker writes to its changelog (``to_state()``). Windows
   are bounded, so these should plateau: the script reports the growth over the first
   and the last --plateau-hours.
2. through the real worker (--worker-beds > 0): the first --worker-beds beds' records
   of the same run are published at full speed to a fresh prefix, one `vigil worker`
   drains them, and its RSS (VmRSS) is sampled against records consumed, mapped back to
   the simulated hour they belong to: RSS per simulated hour, (RSS - RSS idle) / beds,
   and its growth over the last --plateau-hours. RocksDB memtables, faust and aiokafka
   buffers are included (a few beds cannot amortise them). Beside it: the worker's drain
   rate and the raw kafka-python consume rate of the same topics.

Usage: .venv/bin/python bench/memory_24h.py [--beds 2] [--hours 24] [--worker-beds 2]
       [--worker-hours 24]
Writes bench/results/memory_24h-<stamp>.json and .md. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pickle
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    broker,
    load_average,
    parse_args,
    raw_consume_rate,
    report_results,
    results_header,
    rss_bytes,
)
from bench.worker import (  # noqa: E402
    CRRT_EVERY_S,
    NIRS_EVERY_S,
    RAW_TOPICS,
    SEED,
    START,
    Deliveries,
    LagProbe,
    _fmt,
    agent_crashes,
    consumed,
    device_periods,
    fast_plan,
    new_stack,
    start_ready_worker,
    worker_died,
)
from services.kafka_io import reliable_producer  # noqa: E402
from services.sim.bed import SimulatedBed  # noqa: E402
from services.sim.scenarios import Equipment, equipment_of  # noqa: E402
from streams.offline import OfflinePipeline  # noqa: E402
from streams.patient import PatientState  # noqa: E402
from streams.rules import load_rules  # noqa: E402

Encoded = tuple[int, str, bytes, bytes]
"""(simulated second, topic base name, key, value) of one record."""


def heap_bytes(states: list[PatientState]) -> list[int]:
    """Python heap of each state as the worker holds it after reading its snapshot:
    tracemalloc while ``PatientState.from_state`` rebuilds it from the decoded JSON."""
    sizes = []
    for state in states:
        decoded = json.loads(json.dumps(state.to_state()))
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        copy = PatientState.from_state(decoded)
        sizes.append(tracemalloc.get_traced_memory()[0] - before)
        tracemalloc.stop()
        del copy
    return sizes


def pickled_size(state: PatientState) -> int | None:
    try:
        return len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    except TypeError:  # e.g. a mappingproxy inside
        return None


def _run_beds(job: tuple[int, int, int, int, bool]) -> dict[str, Any]:
    """Beds first..last for ``hours``: feed the offline pipeline, measure every hour."""
    first, last, hours, plan_beds, keep = job
    plan = fast_plan(plan_beds)
    pipeline = OfflinePipeline(load_rules())
    records: list[Encoded] = []
    checkpoints: list[dict[str, Any]] = []
    fed = 0
    began = time.perf_counter()
    with device_periods(NIRS_EVERY_S, CRRT_EVERY_S):
        beds = []
        for bed in range(first, last + 1):
            own = tuple(s for s in plan if s.bed == bed)
            drawn = equipment_of(SEED, bed, own)
            equipment = Equipment(drawn.arterial_line, drawn.central_line, nirs=True, crrt=True)
            beds.append(SimulatedBed(SEED, bed, "ICU1", own, equipment))
        for t in range(hours * 3600):
            at = START + timedelta(seconds=t)
            for simulated in beds:
                for record in simulated.step(t, at, at):
                    pipeline.feed(record.topic, record.payload)
                    fed += 1
                    if keep and record.topic in RAW_TOPICS:
                        records.append((t, record.topic, record.key.encode(), record.value()))
            if (t + 1) % 3600 == 0:
                states = list(pipeline.patients.values())
                checkpoints.append(
                    {
                        "hour": (t + 1) // 3600,
                        "records_fed": fed,
                        "heap_bytes": heap_bytes(states),
                        "pickled_bytes": [pickled_size(s) for s in states],
                        "snapshot_json_bytes": [len(json.dumps(s.to_state())) for s in states],
                        "process_rss_mb": rss_bytes(os.getpid()) / 2**20,
                    }
                )
    return {
        "beds": list(range(first, last + 1)),
        "records_fed": fed,
        "wall_s": time.perf_counter() - began,
        "checkpoints": checkpoints,
        "records": records,
    }


def in_process(beds: int, hours: int, keep_beds: int) -> tuple[dict[str, Any], list[Encoded]]:
    """Per-hour state sizes averaged over beds; the encoded records of the first
    ``keep_beds`` beds (for the worker run)."""
    workers = max(1, min(os.cpu_count() or 1, beds))
    bounds = np.linspace(0, beds, workers + 1).astype(int)
    jobs = [
        (int(lo) + 1, int(hi), hours, beds, int(lo) < keep_beds)
        for lo, hi in itertools.pairwise(bounds)
        if hi > lo
    ]
    began = time.perf_counter()
    with ProcessPoolExecutor(len(jobs)) as pool:
        parts = list(pool.map(_run_beds, jobs))
    wall = time.perf_counter() - began
    per_hour = []
    for h in range(hours):
        marks = [p["checkpoints"][h] for p in parts]

        def mean_kb(key: str, marks: list[dict[str, Any]] = marks) -> float | None:
            values = [v for m in marks for v in m[key] if v is not None]
            return float(sum(values)) / len(values) / 1024 if values else None

        per_hour.append(
            {
                "hour": h + 1,
                "heap_kb_per_bed": mean_kb("heap_bytes"),
                "pickled_kb_per_bed": mean_kb("pickled_bytes"),
                "snapshot_json_kb_per_bed": mean_kb("snapshot_json_bytes"),
                "heap_kb_max_bed": max(v for m in marks for v in m["heap_bytes"]) / 1024,
            }
        )
    records = sorted(
        (r for p in parts for r in p["records"] if r_bed(r) <= keep_beds), key=lambda r: r[0]
    )
    fed = sum(p["records_fed"] for p in parts)
    return {
        "beds": beds,
        "hours": hours,
        "records_fed": fed,
        "records_per_bed_s": fed / beds / (hours * 3600),
        "wall_s": wall,
        "records_per_s_per_process": fed / sum(p["wall_s"] for p in parts),
        "per_hour": per_hour,
    }, records


def r_bed(record: Encoded) -> int:
    return int(record[2].decode().rsplit("-", 1)[-1])


def plateau(series: list[tuple[float, float]], last_hours: float) -> dict[str, float | None]:
    """Least-squares growth per hour over the last ``last_hours`` and over the first as
    many (value units per simulated hour)."""
    if not series:
        return {"first_per_h": None, "last_per_h": None}
    end = series[-1][0]
    late = [(h, v) for h, v in series if h >= end - last_hours]
    early = [(h, v) for h, v in series if h <= series[0][0] + last_hours]

    def slope(points: list[tuple[float, float]]) -> float | None:
        if len(points) < 2:
            return None
        x, y = np.array(points, dtype=float).T
        return float(np.polyfit(x, y, 1)[0])

    return {"first_per_h": slope(early), "last_per_h": slope(late)}


def through_worker(
    bootstrap: str, workdir: Path, records: list[Encoded], beds: int, timeout_s: float
) -> dict[str, Any]:
    stack = new_stack(bootstrap, workdir, f"memory{beds}")
    names = {base: stack.registry.name(base) for base in RAW_TOPICS}
    total = len(records)
    # records (cumulative) by the end of each simulated hour
    times = [r[0] for r in records]
    hours = times[-1] // 3600 + 1 if times else 0
    hour_ends = np.searchsorted(times, [3600 * h for h in range(1, hours + 1)])
    cumulative_by_hour = {h + 1: int(n) for h, n in enumerate(hour_ends)}
    probe = LagProbe(bootstrap, stack.app_id, list(names.values()), stack.partitions)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    try:
        proc = start_ready_worker(stack, probe)
        time.sleep(3)
        rss_idle = rss_bytes(proc.pid)

        began = time.monotonic()

        def sample() -> None:
            while not stop.wait(0.5):
                if proc.poll() is not None:
                    return
                taken = consumed(stack.metrics_port)
                if taken is not None:
                    samples.append(
                        {
                            "t_s": round(time.monotonic() - began, 1),
                            "consumed": int(taken),
                            "rss_mb": round(rss_bytes(proc.pid) / 2**20, 1),
                        }
                    )

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        producer = reliable_producer(bootstrap, client_id="bench-memory")
        deliveries = Deliveries()
        try:
            for _t, topic, key, value in records:
                future = producer.send(names[topic], key=key, value=value)
                future.add_callback(deliveries.on_ack)
                future.add_errback(deliveries.on_error)
            producer.flush()
            published_s = time.monotonic() - began
        finally:
            producer.close()
        first = None
        while time.monotonic() - began < timeout_s:
            if proc.poll() is not None:
                raise worker_died(stack, proc)
            if samples and first is None and samples[-1]["consumed"] > 0:
                first = samples[-1]["t_s"]
            if samples and samples[-1]["consumed"] >= total:
                break
            time.sleep(0.5)
        drained_at = samples[-1]["t_s"] if samples else None
        time.sleep(2)
        rss_end = rss_bytes(proc.pid)
    finally:
        stop.set()
        stack.stop_all()
        probe.close()
    baseline = raw_consume_rate(bootstrap, list(names.values()), stack.partitions, total)
    by_hour = []
    for hour, needed in sorted(cumulative_by_hour.items()):
        reached = next((s for s in samples if s["consumed"] >= needed), None)
        if reached is not None:
            above_idle_kb = max(0.0, reached["rss_mb"] * 1024 - rss_idle / 1024)
            by_hour.append(
                {
                    "hour": hour,
                    "rss_mb": reached["rss_mb"],
                    "rss_minus_idle_kb_per_bed": above_idle_kb / beds,
                }
            )
    drain_rate = (
        total / (drained_at - first) if drained_at is not None and first is not None else None
    )
    return {
        "beds": beds,
        "records": total,
        "publish_records_per_s": total / published_s,
        "worker_records_per_s": drain_rate,
        "raw_consume_records_per_s": baseline,
        "worker_vs_raw_consume": drain_rate / baseline if drain_rate else None,
        "rss_idle_mb": rss_idle / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "rss_max_mb": max((s["rss_mb"] for s in samples), default=None),
        "rss_minus_idle_kb_per_bed_end": (rss_end - rss_idle) / 1024 / beds,
        "by_hour": by_hour,
        "agent_crashes": agent_crashes(stack),
        "records_not_acked": deliveries.failed,
        "timeline": samples,
    }


def to_markdown(results: dict[str, Any], plateau_hours: float) -> str:
    p = results["in_process"]
    hours = p["per_hour"]
    shown = sorted({1, 6, 12, 18, len(hours)} & {h["hour"] for h in hours})
    lines = [
        f"# Memory per bed after {p['hours']} h simulated ({results['when']}, "
        f"{results['machine']}, commit {results['commit']})",
        "",
        f"Load average at start {results['load_average_at_start']}, at end "
        f"{results['load_average_at_end']}.",
        "",
        f"In-process (OfflinePipeline, no Kafka): {p['beds']} beds x {p['hours']} h of "
        f"simulated time, {p['records_fed']:,} records ({p['records_per_bed_s']:.2f} per "
        f"bed-second), {p['records_per_s_per_process']:,.0f} records/s per process "
        "(simulator included).",
        "",
        "| simulated hour | heap KB per bed (max bed) | pickled KB per bed | "
        "state snapshot JSON KB per bed |",
        "|---|---|---|---|",
    ]
    for h in hours:
        if h["hour"] in shown:
            lines.append(
                f"| {h['hour']} | {h['heap_kb_per_bed']:,.0f} ({h['heap_kb_max_bed']:,.0f}) | "
                f"{_fmt(h['pickled_kb_per_bed'])} | {h['snapshot_json_kb_per_bed']:,.0f} |"
            )
    growth = results["in_process_heap_growth_kb_per_bed_per_h"]
    lines += [
        "",
        f"Heap growth per bed: {_fmt(growth['first_per_h'], 1)} KB/h over the first "
        f"{plateau_hours:g} h, {_fmt(growth['last_per_h'], 1)} KB/h over the last "
        f"{plateau_hours:g} h.",
    ]
    w = results.get("worker")
    if w:
        lines += [
            "",
            f"Through the real worker: {w['beds']} beds' records of the same run, "
            f"{len(w['by_hour'])} h simulated ({w['records']:,} records), published at full "
            f"speed ({w['publish_records_per_s']:,.0f}/s),"
            f" worker drain {_fmt(w['worker_records_per_s'])} records/s vs raw consume "
            f"{_fmt(w['raw_consume_records_per_s'])} records/s (ratio "
            f"{_fmt(w['worker_vs_raw_consume'], 3)}); RSS idle {w['rss_idle_mb']:.0f} MB, "
            f"end {w['rss_end_mb']:.0f} MB, max {_fmt(w['rss_max_mb'])} MB; agent crashes "
            f"{w['agent_crashes']}.",
            "",
            "| simulated hour reached | worker RSS MB | (RSS - idle) / beds, KB |",
            "|---|---|---|",
        ]
        for h in w["by_hour"]:
            if h["hour"] in shown or h is w["by_hour"][-1]:
                lines.append(
                    f"| {h['hour']} | {h['rss_mb']:,.0f} | {h['rss_minus_idle_kb_per_bed']:,.0f} |"
                )
        g = results["worker_rss_growth_mb_per_h"]
        lines += [
            "",
            f"Worker RSS growth: {_fmt(g['first_per_h'], 1)} MB per simulated hour over the "
            f"first {plateau_hours:g} h, {_fmt(g['last_per_h'], 1)} MB/h over the last "
            f"{plateau_hours:g} h.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beds", type=int, default=2, help="beds run in-process")
    parser.add_argument("--hours", type=int, default=24, help="simulated hours")
    parser.add_argument(
        "--worker-beds", type=int, default=2, help="of those, beds also run through the worker"
    )
    parser.add_argument(
        "--worker-hours", type=int, default=None, help="simulated hours through the worker"
    )
    parser.add_argument("--plateau-hours", type=float, default=6)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parse_args(parser)
    keep = min(args.worker_beds, args.beds)
    results = results_header()
    print(f"in-process: {args.beds} beds x {args.hours} h simulated ...", flush=True)
    results["in_process"], records = in_process(args.beds, args.hours, keep)
    heap = [(h["hour"], h["heap_kb_per_bed"]) for h in results["in_process"]["per_hour"]]
    results["in_process_heap_growth_kb_per_bed_per_h"] = plateau(heap, args.plateau_hours)
    print(f"  done in {results['in_process']['wall_s']:.0f} s", flush=True)
    if args.worker_hours is not None:
        records = [r for r in records if r[0] < args.worker_hours * 3600]
    if keep:
        print(f"through the worker: {keep} beds, {len(records):,} records ...", flush=True)
        with broker("memory") as kafka:
            results["worker"] = through_worker(
                kafka.bootstrap, kafka.workdir, records, keep, args.timeout
            )
        rss = [(h["hour"], h["rss_mb"]) for h in results["worker"]["by_hour"]]
        results["worker_rss_growth_mb_per_h"] = plateau(rss, args.plateau_hours)
    results["load_average_at_end"] = load_average()
    markdown = to_markdown(results, args.plateau_hours)
    report_results(args, "memory_24h", results, markdown)


if __name__ == "__main__":
    main()
