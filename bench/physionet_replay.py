"""Full-speed replay of PhysioNet 2019 set A through the real broker and one worker.

One `vigil worker` is started on a fresh topic prefix and app id and is ready (its group
Stable); then `vigil replay <set A> --speed max [--patients N]` publishes the set (all
20,336 patients unless --patients) as validated, coded records on the vitals, labs and
context topics while the worker drains them. Figures:

- publish: records and patients the replay reports, its records/s (what `vigil replay`
  prints: read, convert, validate, send, with the worker running on the same cores),
  beside the same replay with --dry-run (JSON lines to /dev/null, no Kafka): the
  cost of the source itself;
- worker: records/s from its first consumed record until it has consumed every record
  (vigil_samples_in_total), and steady after the replay finished (the worker alone on
  the machine), beside the raw kafka-python consume rate of the same topics read back
  afterwards; alert events, features and dead letters it wrote.

Usage: .venv/bin/python bench/physionet_replay.py [--patients 2000]
Writes bench/results/physionet_replay-<stamp>.json and .md. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

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
    LagProbe,
    _fmt,
    agent_crashes,
    busy_cores,
    consumed,
    cpu_seconds,
    log_warnings,
    machine_cpu,
    new_stack,
    outputs,
    scrape,
    start_ready_worker,
    topic_records,
    total_of,
    worker_died,
)
from services import procs  # noqa: E402

SET_A = ROOT.parent / "shared" / "data" / "physionet2019" / "setA.psv.tar.gz"
TOPICS = ("vitals", "labs", "context")  # services.replay.source.TOPICS_BY_KIND
PUBLISHED = re.compile(r"published (\d+) records \((.*?)\) in ([\d.]+) s: (\d+) records/s")
REPLAYING = re.compile(r"replaying \S+: (\d+) patients")


def dry_run_rate(source: Path, patients: int | None) -> dict[str, float]:
    """`vigil replay --dry-run` to /dev/null: reading and converting, no Kafka."""
    argv = [sys.executable, "-m", "services.cli", "replay", str(source), "--dry-run"]
    argv += ["--patients", str(patients)] if patients else []
    began = time.perf_counter()
    lines = 0
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        for _line in proc.stdout:
            lines += 1
    elapsed = time.perf_counter() - began
    return {"records": lines, "wall_s": elapsed, "records_per_s": lines / elapsed}


def bench_replay(
    bootstrap: str, workdir: Path, source: Path, patients: int | None, timeout_s: float
) -> dict[str, Any]:
    stack = new_stack(bootstrap, workdir, "replay")
    names = [stack.registry.name(t) for t in TOPICS]
    probe = LagProbe(bootstrap, stack.app_id, names, stack.partitions)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    replay_log = stack.workdir / "replay.log"
    try:
        proc = start_ready_worker(stack, probe)
        time.sleep(2)
        rss_idle = rss_bytes(proc.pid)
        began = time.monotonic()

        def sample() -> None:
            while not stop.wait(0.5):
                if proc.poll() is not None:
                    return
                taken = consumed(stack.metrics_port)
                samples.append(
                    {
                        "t_s": round(time.monotonic() - began, 2),
                        "consumed": None if taken is None else int(taken),
                        "rss_mb": round(rss_bytes(proc.pid) / 2**20, 1),
                        "cpu_s": round(cpu_seconds(proc.pid), 2),
                    }
                )

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        argv = [sys.executable, "-m", "services.cli", "replay", str(source), "--speed", "max"]
        argv += ["--no-progress"] + (["--patients", str(patients)] if patients else [])
        replay = procs.spawn(argv, env=stack.env(), log_path=replay_log)
        stack.processes.append(replay)
        while replay.poll() is None:
            if proc.poll() is not None:
                raise worker_died(stack, proc)
            if time.monotonic() - began > timeout_s:
                raise RuntimeError("replay did not finish in time")
            time.sleep(0.5)
        replay_done = time.monotonic() - began
        text = replay_log.read_text()
        if replay.returncode != 0:
            raise RuntimeError(f"vigil replay exited {replay.returncode}:\n{text[-3000:]}")
        total = sum(topic_records(bootstrap, names).values())
        cpu_start, machine_start = cpu_seconds(proc.pid), machine_cpu()
        all_in = None
        while time.monotonic() - began < timeout_s:
            if proc.poll() is not None:
                raise worker_died(stack, proc)
            taken = consumed(stack.metrics_port) or 0
            if taken >= total or probe.lag() == 0:
                all_in = time.monotonic() - began
                break
            time.sleep(0.5)
        cpu_alone = cpu_seconds(proc.pid) - cpu_start
        cores = busy_cores(machine_start, machine_cpu())
        time.sleep(2)
        metrics = scrape(stack.metrics_port)
        rss_end = rss_bytes(proc.pid)
    finally:
        stop.set()
        stack.stop_all()
        probe.close()
    baseline = raw_consume_rate(bootstrap, names, stack.partitions, total)
    published = PUBLISHED.search(text)
    replaying = REPLAYING.search(text)
    counted = [s for s in samples if s["consumed"]]
    first = counted[0]["t_s"] if counted else None
    after = [s for s in counted if s["t_s"] >= replay_done]
    steady = (
        (after[-1]["consumed"] - after[0]["consumed"]) / (after[-1]["t_s"] - after[0]["t_s"])
        if len(after) >= 3 and after[-1]["t_s"] > after[0]["t_s"]
        else None
    )
    drain = total / (all_in - first) if all_in is not None and first is not None else None
    return {
        "patients": int(replaying.group(1)) if replaying else None,
        "records": total,
        "records_by_topic": published.group(2) if published else None,
        "replay_wall_s": float(published.group(3)) if published else None,
        "replay_records_per_s": float(published.group(4)) if published else None,
        "replay_wall_incl_startup_s": replay_done,
        "worker_records_per_s": drain,
        "worker_records_per_s_after_replay": steady,
        "worker_cpu_cores_after_replay": cpu_alone / (all_in - replay_done)
        if all_in is not None and all_in > replay_done
        else None,
        "machine_cores_busy_after_replay": cores,
        "worker_drained_s_after_replay": (all_in - replay_done) if all_in is not None else None,
        "raw_consume_records_per_s": baseline,
        "worker_vs_raw_consume": drain / baseline if drain else None,
        "completed": all_in is not None,
        "alert_events": total_of(metrics, "vigil_alert_events_total"),
        "dead_letters": total_of(metrics, "vigil_dead_letters_total"),
        "written": outputs(stack),
        "rss_idle_mb": rss_idle / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "agent_crashes": agent_crashes(stack),
        "worker_log": log_warnings(stack),
        "replay_log_tail": text[-600:],
        "timeline": samples,
    }


def to_markdown(results: dict[str, Any]) -> str:
    r, dry = results["run"], results["dry_run"]
    rows = [
        ("patients / records (vitals, labs, context)",
         f"{_fmt(r['patients'])} / {r['records']:,} ({r['records_by_topic']})"),
        ("`vigil replay --speed max` records/s (worker running)", _fmt(r["replay_records_per_s"])),
        ("`vigil replay --dry-run` records/s (no Kafka, baseline)", _fmt(dry["records_per_s"])),
        ("replay / dry run", _fmt((r["replay_records_per_s"] or 0) / dry["records_per_s"], 2)),
        ("worker records/s, first record to all consumed", _fmt(r["worker_records_per_s"])),
        ("worker records/s after the replay finished (alone)",
         _fmt(r["worker_records_per_s_after_replay"])),
        ("raw kafka-python consume records/s (same topics, baseline)",
         _fmt(r["raw_consume_records_per_s"])),
        ("worker / raw consume", _fmt(r["worker_vs_raw_consume"], 3)),
        ("worker CPU, cores (after the replay)", _fmt(r["worker_cpu_cores_after_replay"], 2)),
        ("machine busy, cores of 2 (after the replay)",
         _fmt(r["machine_cores_busy_after_replay"], 2)),
        ("alert events / features / dead letters written",
         f"{_fmt(r['written']['alerts'])} / {_fmt(r['written']['features'])} / "
         f"{_fmt(r['written']['deadletter'])}"),
        ("worker RSS idle / end, MB", f"{r['rss_idle_mb']:.0f} / {r['rss_end_mb']:.0f}"),
        ("worker agent crashes", _fmt(r["agent_crashes"])),
    ]  # fmt: skip
    lines = [
        f"# PhysioNet 2019 set A replay ({results['when']}, {results['machine']}, commit "
        f"{results['commit']})",
        "",
        f"Source {results['source']}, {results['subset']}. Load average at start "
        f"{results['load_average_at_start']}, at end {results['load_average_at_end']}.",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {label} | {value} |" for label, value in rows),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SET_A)
    parser.add_argument(
        "--patients", type=int, default=None, help="first N patients (default: all of set A)"
    )
    parser.add_argument("--timeout", type=float, default=3600)
    args = parse_args(parser)
    results = results_header(
        source=args.source.name,
        subset=f"first {args.patients} patients" if args.patients else "every patient",
    )
    print(f"dry run ({results['subset']}) ...", flush=True)
    results["dry_run"] = dry_run_rate(args.source, args.patients)
    print(f"  {results['dry_run']['records_per_s']:,.0f} records/s", flush=True)
    with broker("replay") as kafka:
        print("replay at max with a worker ...", flush=True)
        results["run"] = bench_replay(
            kafka.bootstrap, kafka.workdir, args.source, args.patients, args.timeout
        )
    results["load_average_at_end"] = load_average()
    markdown = to_markdown(results)
    report_results(args, "physionet_replay", results, markdown)


if __name__ == "__main__":
    main()
