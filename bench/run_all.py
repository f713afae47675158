"""Every benchmark of issue 7 in one command, against one broker, with a summary table.

Runs, each as its own process with the same file stamp (so their results sit side by
side in bench/results/):

- worker     bench/worker.py: drain rate vs raw consume, live event-to-alert latency at
             1x, keep-up, RSS per bed (--beds, --drain-seconds, --live-seconds, --probes)
- replay     bench/physionet_replay.py: `vigil replay` of PhysioNet set A at max with a
             worker (--replay-patients; 0 = all 20,336 patients)
- memory     bench/memory_24h.py: state per bed after 24 h simulated, in-process and
             through the worker (--memory-beds, --memory-hours, --memory-worker-beds)
- rebalance  bench/rebalance.py: two workers, one app id: throughput and alerts vs the
             offline pipeline (--rebalance-beds, --rebalance-seconds)

One local broker (free ports, scratch dir) is started for all of them unless
KAFKA_BOOTSTRAP_SERVERS is set, and stopped at the end. Results:
bench/results/<name>-<stamp>.json/.md per benchmark and summary-<stamp>.json/.md (the
combined table, each figure beside the baseline measured in the same run, with the
load average before and after each benchmark).

Usage: .venv/bin/python bench/run_all.py                 # about 15 min on 2 cores
       .venv/bin/python bench/run_all.py --only replay rebalance --replay-patients 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    broker,
    load_average,
    report_results,
    results_header,
    stamp,
    stop_cleanly_on_signals,
)
from bench.worker import _fmt  # noqa: E402

BENCHMARKS = ("worker", "replay", "memory", "rebalance")
FILES = {
    "worker": "worker",
    "replay": "physionet_replay",
    "memory": "memory_24h",
    "rebalance": "rebalance",
}


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    return {
        "worker": [
            "worker.py",
            "--beds",
            *map(str, args.beds),
            "--drain-seconds",
            str(args.drain_seconds),
            "--live-seconds",
            str(args.live_seconds),
            "--probes",
            str(args.probes),
            "--probe-seconds",
            str(args.live_seconds),
            "--settle-seconds",
            str(args.settle_seconds),
        ],
        "replay": ["physionet_replay.py"]
        + (["--patients", str(args.replay_patients)] if args.replay_patients else []),
        "memory": [
            "memory_24h.py",
            "--beds",
            str(args.memory_beds),
            "--hours",
            str(args.memory_hours),
            "--worker-beds",
            str(args.memory_worker_beds),
            "--worker-hours",
            str(args.memory_worker_hours),
        ],
        "rebalance": [
            "rebalance.py",
            "--beds",
            str(args.rebalance_beds),
            "--seconds",
            str(args.rebalance_seconds),
            *([] if args.rebalance_control else ["--no-control"]),
        ],
    }


def run(
    name: str, argv: list[str], args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    """One benchmark as a child process (output passed through); its JSON results."""
    command = [sys.executable, str(ROOT / "bench" / argv[0]), *argv[1:]]
    command += ["--stamp", args.stamp, "--out", str(args.out)]
    path = args.out / f"{FILES[name]}-{args.stamp}.json"
    if args.reuse and path.exists():  # measured earlier under this stamp
        results = json.loads(path.read_text())
        print(f"\n=== {name}: reusing {path.name}", flush=True)
        return {
            "command": " ".join(argv) + " (reused)",
            "exit_code": 0,
            "wall_s": None,
            "load_average_before": results["load_average_at_start"],
            "load_average_after": results["load_average_at_end"],
            "results": results,
        }
    print(f"\n=== {name}: {' '.join(argv)}", flush=True)
    began = time.monotonic()
    load_before = load_average()
    child = subprocess.Popen(command, env=env, cwd=ROOT)
    try:
        returncode = child.wait()
    finally:
        if child.poll() is None:  # interrupted: let the child stop what it started
            child.terminate()
            child.wait(timeout=120)
    return {
        "command": " ".join(argv),
        "exit_code": returncode,
        "wall_s": time.monotonic() - began,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "results": json.loads(path.read_text()) if returncode == 0 and path.exists() else None,
    }


def _ratio(a: float | None, b: float | None, digits: int = 3) -> str:
    return _fmt(a / b, digits) if a and b else "-"


def _load(run: dict[str, Any]) -> str:
    before, after = run["load_average_before"], run["load_average_after"]
    return f"{before[0]:.1f} -> {after[0]:.1f}"


def summary_rows(runs: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """(figure, value, baseline in the same run, ratio, load average 1 min before -> after)."""
    rows: list[tuple[str, str, str, str, str]] = []
    for name, run in runs.items():
        r = run["results"]
        load = _load(run)
        if r is None:
            rows.append((f"{name}: FAILED (exit {run['exit_code']})", "-", "-", "-", load))
            continue
        if name == "worker":
            for beds, both in r["runs"].items():
                d, live = both["drain"], both["live"]
                rows.append(
                    (
                        f"one worker, ingest-to-alert drain, records/s ({beds} beds' load)",
                        _fmt(d["worker_records_per_s"]),
                        f"raw consume {_fmt(d['raw_consume_records_per_s'])}",
                        _fmt(d["worker_vs_raw_consume"], 3),
                        load,
                    )
                )
                rows.append(
                    (
                        f"  beds sustained by that rate (1 Hz vitals + 1 Hz NIRS + CRRT 10 s, "
                        f"{d['records_per_bed_s']:.2f} records/bed/s)",
                        _fmt(d["beds_sustained_estimate"]),
                        "",
                        "",
                        load,
                    )
                )
                lat = live["latency"]["raised_minus_received"]
                rows.append(
                    (
                        f"event-to-alert latency p50 / p95 / p99 ms, {beds} beds live at 1x "
                        f"(kept up: {_fmt(live['kept_up'])})",
                        " / ".join(_fmt(lat[k]) for k in ("p50_ms", "p95_ms", "p99_ms")),
                        f"{live['latency']['record_triggered']} record-triggered alerts",
                        "",
                        load,
                    )
                )
            rows.append(
                (
                    "highest bed count kept up live at 1x (lowest not kept up)",
                    f"{_fmt(r['highest_beds_kept_up'])} ({_fmt(r['lowest_beds_not_kept_up'])})",
                    "",
                    "",
                    load,
                )
            )
        elif name == "replay":
            x, dry = r["run"], r["dry_run"]
            rows.append(
                (
                    f"PhysioNet set A replay at max, records/s ({_fmt(x['patients'])} patients, "
                    f"{x['records']:,} records)",
                    _fmt(x["replay_records_per_s"]),
                    f"--dry-run (no Kafka) {_fmt(dry['records_per_s'])}",
                    _ratio(x["replay_records_per_s"], dry["records_per_s"], 2),
                    load,
                )
            )
            rows.append(
                (
                    "  worker draining the replay, records/s (first record to all consumed)",
                    _fmt(x["worker_records_per_s"]),
                    f"raw consume {_fmt(x['raw_consume_records_per_s'])}",
                    _fmt(x["worker_vs_raw_consume"], 3),
                    load,
                )
            )
        elif name == "memory":
            p = r["in_process"]
            last = p["per_hour"][-1]
            g = r["in_process_heap_growth_kb_per_bed_per_h"]
            rows.append(
                (
                    f"PatientState heap per bed after {p['hours']} h simulated, KB "
                    f"(in-process, {p['beds']} beds)",
                    f"{last['heap_kb_per_bed']:,.0f}",
                    f"snapshot JSON {last['snapshot_json_kb_per_bed']:,.0f} KB",
                    f"growth last 6 h {_fmt(g['last_per_h'], 1)} KB/h",
                    load,
                )
            )
            w = r.get("worker")
            if w:
                gw = r["worker_rss_growth_mb_per_h"]
                rows.append(
                    (
                        f"  worker RSS above idle after {len(w['by_hour'])} h simulated, MB "
                        f"({w['beds']} bed(s) through the broker; buffers, not beds)",
                        f"{w['rss_end_mb'] - w['rss_idle_mb']:,.0f} (max "
                        f"{_fmt(w['rss_max_mb'])} RSS)",
                        f"idle RSS {w['rss_idle_mb']:.0f} MB; drain "
                        f"{_fmt(w['worker_records_per_s'])} vs raw "
                        f"{_fmt(w['raw_consume_records_per_s'])} /s",
                        f"RSS growth last 6 h {_fmt(gw['last_per_h'], 1)} MB/h",
                        load,
                    )
                )
        elif name == "rebalance":
            x, control = r["run"], r.get("control")
            c = x["correctness"]
            rows.append(
                (
                    "two workers on one machine, records/s (both running)",
                    _fmt(x["pair_records_per_s"]),
                    f"one worker (A alone, same run) {_fmt(x['one_worker_records_per_s'])}; "
                    f"raw consume {_fmt(x['raw_consume_records_per_s'])}",
                    f"{_fmt(x['pair_vs_one_worker'], 2)} x one worker; "
                    f"{_fmt(x['pair_vs_raw_consume'], 3)} x raw",
                    load,
                )
            )
            rows.append(
                (
                    "  overall incl. rebalances, records / (first record to all committed) s",
                    _fmt(x["overall_published_records_per_s"]),
                    "one worker alone (control drain) "
                    + (_fmt(control["overall_published_records_per_s"]) if control else "-"),
                    _ratio(
                        x["overall_published_records_per_s"],
                        control["overall_published_records_per_s"] if control else None,
                        2,
                    ),
                    load,
                )
            )
            rows.append(
                (
                    "  across two rebalances: alerts vs offline pipeline "
                    "(missing / extra / duplicates, same id)",
                    f"{c['missing']} / {c['extra']} / {c['duplicate_records']} of "
                    f"{c['offline_events']}",
                    "identical" if c["identical"] else "NOT identical",
                    "",
                    load,
                )
            )
            if control:
                k = control["correctness"]
                rows.append(
                    (
                        "  control, one worker no rebalance: alerts vs offline "
                        "(missing / extra / duplicates)",
                        f"{k['missing']} / {k['extra']} / {k['duplicate_records']} of "
                        f"{k['offline_events']}",
                        "identical" if k["identical"] else "NOT identical",
                        "",
                        load,
                    )
                )
    return rows


def to_markdown(summary: dict[str, Any], runs: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"# Vigil benchmarks ({summary['when']}, {summary['machine']}, commit {summary['commit']})",
        "",
        f"One broker for all; load average (1/5/15 min) at start "
        f"{summary['load_average_at_start']}, at end {summary['load_average_at_end']}; "
        f"{summary['wall_s'] / 60:.1f} min in this invocation"
        + (" (some results reused from an earlier one)." if summary.get("reused") else "."),
        "",
        "| figure | value | baseline, same run | ratio | load avg |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in summary["rows"]]
    lines += ["", "Commands: " + "; ".join(f"`{r['command']}`" for r in runs.values()), ""]
    for name in runs:
        md = summary["out"] / f"{FILES[name]}-{summary['stamp']}.md"
        if md.exists():
            lines += ["", md.read_text().replace("\n# ", "\n## ").replace("# ", "## ", 1)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--skip", nargs="+", choices=BENCHMARKS, default=[])
    parser.add_argument("--beds", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--drain-seconds", type=int, default=30)
    parser.add_argument(
        "--live-seconds",
        type=int,
        default=100,
        help="keep >= 90: the scenarios' first alerts come 65-110 s in (none before 60 s)",
    )
    parser.add_argument("--settle-seconds", type=float, default=25)
    parser.add_argument("--probes", type=int, default=0)
    parser.add_argument("--replay-patients", type=int, default=500, help="0: all of set A")
    parser.add_argument("--memory-beds", type=int, default=4)
    parser.add_argument("--memory-hours", type=int, default=24)
    parser.add_argument("--memory-worker-beds", type=int, default=1)
    parser.add_argument("--memory-worker-hours", type=int, default=24)
    parser.add_argument("--rebalance-beds", type=int, default=120)
    parser.add_argument("--rebalance-seconds", type=int, default=150)
    parser.add_argument("--rebalance-control", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--stamp", default=None)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --stamp: keep the results already written under that stamp, run the rest",
    )
    args = parser.parse_args()
    stop_cleanly_on_signals()
    args.stamp = args.stamp or stamp()
    chosen = [b for b in BENCHMARKS if b in args.only and b not in args.skip]
    summary = results_header(stamp=args.stamp)
    began = time.monotonic()
    runs: dict[str, dict[str, Any]] = {}
    with broker("all") as kafka:
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}
        for name in chosen:
            runs[name] = run(name, commands(args)[name], args, env)
    summary["wall_s"] = time.monotonic() - began
    summary["reused"] = [name for name, run in runs.items() if run["wall_s"] is None]
    summary["load_average_at_end"] = load_average()
    summary["rows"] = summary_rows(runs)
    summary["out"] = args.out
    markdown = to_markdown(summary, runs)
    summary["out"] = str(args.out)
    summary["benchmarks"] = {
        name: {k: v for k, v in run.items() if k != "results"} for name, run in runs.items()
    }
    report_results(args, "summary", summary, markdown)
    if any(run["exit_code"] for run in runs.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
