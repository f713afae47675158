"""Two workers with the same app id on one machine: throughput and correctness across
rebalances.

The load of bench/worker.py (per bed 1 Hz vitals, 1 Hz NIRS, CRRT every 10 s, scenarios
that raise alerts early) is published to a fresh prefix before any worker starts; the
raw kafka-python consume rate of the same topics is the baseline. Then:

1. worker A starts alone (one worker: its records/s until B joins);
2. when --join-at of the records are consumed, worker B starts with the same app id
   (its own metrics port and local store): the group rebalances and the pair drains
   (pair: records/s of A + B from B's first record until A is stopped);
3. when --stop-at are consumed, A is stopped (SIGTERM, graceful): a second rebalance
   hands A's partitions to B, which restores their state from the changelog and
   finishes alone; the run ends when the group's committed lag is 0.

Records consumed twice (processed but not committed before a rebalance) count in the
workers' consumed totals, so "records processed" may exceed the records published.

Correctness: the alert events on the alerts topic against streams/offline.py's
OfflinePipeline fed the same records in the order they were published: the same event
ids, none missing, none extra, and every repeated event id (at-least-once) with the
same content (patient, rule, phase, condition time).

Usage: .venv/bin/python bench/rebalance.py [--beds 300] [--seconds 240]
Writes bench/results/rebalance-<stamp>.json and .md. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
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
    RAW_TOPICS,
    SENTINEL_JSON,
    START,
    LagProbe,
    Row,
    _fmt,
    agent_crashes,
    busy_cores,
    consumed,
    cpu_seconds,
    generate_load,
    log_warnings,
    machine_cpu,
    new_stack,
    publish_rows,
    read_alerts,
)
from schemas.alerts import AlertEvent  # noqa: E402
from schemas.context import ContextEvent  # noqa: E402
from schemas.observations import CrrtStatus, LabResults, NirsSample, VitalSigns  # noqa: E402
from services import procs  # noqa: E402
from streams.offline import OfflinePipeline  # noqa: E402
from streams.rules import load_rules  # noqa: E402
from tests.support.stack import Stack  # noqa: E402

MODELS: dict[str, Any] = {
    "vitals": VitalSigns,
    "nirs": NirsSample,
    "crrt": CrrtStatus,
    "labs": LabResults,
    "context": ContextEvent,
}


def offline_events(rows: list[Row], partitions: int) -> dict[str, tuple[str, str, str, str]]:
    """Event id -> (patient, rule, phase, triggered_at) of the offline pipeline on the
    records in the order they were published (received_at as published does not enter
    an event id)."""
    pipeline = OfflinePipeline(load_rules(), partitions=partitions)
    found: dict[str, tuple[str, str, str, str]] = {}
    stamp_bytes = b"2026-01-01T00:00:00.000000Z"
    for row in rows:
        for _bed, topic, _key, value in row:
            payload = MODELS[topic].model_validate_json(value.replace(SENTINEL_JSON, stamp_bytes))
            for draft in pipeline.feed(topic, payload):
                found[draft.event_id] = identity(draft.to_event(START))
    return found


def identity(event: AlertEvent) -> tuple[str, str, str, str]:
    return (event.patient_id, event.rule_id, str(event.phase), event.triggered_at.isoformat())


@dataclass
class Sampler:
    """Consumed counts of both workers, committed lag, RSS and CPU every 0.5 s."""

    a: Stack
    b: Stack
    probe: LagProbe
    procs_of: dict[str, Any] = field(default_factory=dict)
    began: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    last: dict[str, float] = field(default_factory=lambda: {"a": 0.0, "b": 0.0})

    def sample(self) -> dict[str, Any]:
        row: dict[str, Any] = {"t_s": round(time.monotonic() - self.began, 2)}
        for name, stack in (("a", self.a), ("b", self.b)):
            proc = self.procs_of.get(name)
            if proc is None:
                continue
            taken = consumed(stack.metrics_port)
            if taken is not None:
                self.last[name] = taken  # a stopped worker keeps what it consumed
            row[f"consumed_{name}"] = int(self.last[name])
            if proc.poll() is None:
                row[f"rss_{name}_mb"] = round(rss_bytes(proc.pid) / 2**20, 1)
                row[f"cpu_{name}_s"] = round(cpu_seconds(proc.pid), 2)
        row["consumed"] = int(self.last["a"] + self.last["b"])
        row["committed_lag"] = self.probe.lag()
        return row

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.samples.append(self.sample())


def rate_between(samples: list[dict[str, Any]], t0: float | None, t1: float | None) -> float | None:
    """Records consumed (both workers) per second between two times of the timeline."""
    if t0 is None or t1 is None or t1 - t0 < 1.0:
        return None
    inside = [s for s in samples if t0 <= s["t_s"] <= t1]
    if len(inside) < 2 or inside[-1]["t_s"] - inside[0]["t_s"] <= 0:
        return None
    done = float(inside[-1]["consumed"] - inside[0]["consumed"])
    return done / float(inside[-1]["t_s"] - inside[0]["t_s"])


def bench_rebalance(
    bootstrap: str,
    workdir: Path,
    rows: list[Row],
    beds: int,
    args: argparse.Namespace,
    *,
    join_at: float | None,
    expected: dict[str, tuple[str, str, str, str]],
) -> dict[str, Any]:
    """One drain of ``rows``: worker A, B joining at ``join_at`` (None: A alone)."""
    stack = new_stack(bootstrap, workdir, f"{'pair' if join_at is not None else 'one'}{beds}")
    second = Stack(bootstrap, stack.workdir / "b", stack.prefix, app_id=stack.app_id)
    second.workdir.mkdir(parents=True, exist_ok=True)
    total = sum(map(len, rows))
    publish_rate, deliveries = publish_rows(bootstrap, stack, rows, client_id="bench-rebalance")
    if deliveries.failed:
        raise RuntimeError(f"{deliveries.failed} records not acknowledged")
    names = [stack.registry.name(t) for t in RAW_TOPICS]
    baseline = raw_consume_rate(bootstrap, names, stack.partitions, total)
    print(f"  published {total:,} at {publish_rate:,.0f}/s; raw consume {baseline:,.0f}/s")

    probe = LagProbe(bootstrap, stack.app_id, names, stack.partitions)
    sampler = Sampler(stack, second, probe)
    thread = threading.Thread(target=sampler.run, daemon=True)
    events: dict[str, float | None] = {
        "a_first_record": None,
        "b_started": None,
        "b_first_record": None,
        "a_stop_requested": None,
        "a_stopped": None,
        "all_committed": None,
        "stalled": None,
    }
    stopper: threading.Thread | None = None
    machine_start = machine_cpu()
    try:
        proc_a = stack.start_worker("worker-a")
        sampler.procs_of["a"] = proc_a
        thread.start()
        deadline = time.monotonic() + args.timeout
        last_progress: tuple[int, int | None] = (0, None)
        progressed_at = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            if not sampler.samples:
                continue
            now = sampler.samples[-1]
            t = now["t_s"]
            if events["a_first_record"] is None and now.get("consumed_a", 0) > 0:
                events["a_first_record"] = t
            if (
                join_at is not None
                and events["b_started"] is None
                and now["consumed"] >= join_at * total
            ):
                sampler.procs_of["b"] = second.start_worker("worker-b")
                events["b_started"] = time.monotonic() - sampler.began
                print(f"  worker B started at {now['consumed']:,} consumed", flush=True)
            if (
                events["b_started"] is not None
                and events["b_first_record"] is None
                and now.get("consumed_b", 0) > 0
            ):
                events["b_first_record"] = t
            if (
                events["a_stop_requested"] is None
                and events["b_first_record"] is not None
                and args.stop_at < 1.0
                and now["consumed"] >= args.stop_at * total
            ):
                events["a_stop_requested"] = time.monotonic() - sampler.began
                print(f"  stopping worker A at {now['consumed']:,} consumed", flush=True)

                def stop_a() -> None:
                    procs.stop(proc_a, timeout_s=30)
                    events["a_stopped"] = time.monotonic() - sampler.began

                stopper = threading.Thread(target=stop_a, daemon=True)
                stopper.start()
            for name, proc in sampler.procs_of.items():
                stopping = name == "a" and events["a_stop_requested"] is not None
                if proc.poll() is not None and not stopping:
                    raise RuntimeError(f"worker {name} exited {proc.returncode}")
            progress = (now["consumed"], now["committed_lag"])
            if progress != last_progress:
                last_progress, progressed_at = progress, time.monotonic()
            elif time.monotonic() - progressed_at > args.stall_seconds:
                events["stalled"] = t  # nothing consumed or committed for stall_seconds
                print(f"  stalled: nothing consumed or committed for {args.stall_seconds:.0f} s")
                break
            if now["committed_lag"] == 0 and (join_at is None or events["b_started"] is not None):
                events["all_committed"] = t
                break
        time.sleep(2.0)  # the last batch's alerts
        machine_end = machine_cpu()
    finally:
        sampler.stop.set()
        thread.join(timeout=10)
        if stopper is not None:
            stopper.join(timeout=40)
        stack.stop_all()
        second.stop_all()
        probe.close()

    samples = sampler.samples
    alerts = read_alerts(stack)
    correctness = compare(alerts, expected)

    t_first, t_b, t_stop = events["a_first_record"], events["b_first_record"], None
    t_stop = events["a_stop_requested"]
    t_end = events["all_committed"]
    one_worker = rate_between(samples, t_first, events["b_started"] or t_end)
    pair = rate_between(samples, t_b, t_stop if t_stop is not None else t_end)
    b_alone = rate_between(samples, events["a_stopped"], t_end)
    overall = total / (t_end - t_first) if t_end is not None and t_first is not None else None
    last = samples[-1] if samples else {}
    return {
        "beds": beds,
        "seconds": len(rows),
        "records": total,
        "publish_records_per_s": publish_rate,
        "raw_consume_records_per_s": baseline,
        "join_at": join_at,
        "stop_at": args.stop_at if join_at is not None else None,
        "events_s": events,
        "completed": t_end is not None,
        "one_worker_records_per_s": one_worker,
        "pair_records_per_s": pair,
        "b_alone_after_a_stopped_records_per_s": b_alone,
        "overall_published_records_per_s": overall,
        "pair_vs_one_worker": pair / one_worker if pair and one_worker else None,
        "one_worker_vs_raw_consume": one_worker / baseline if one_worker else None,
        "pair_vs_raw_consume": pair / baseline if pair else None,
        "records_processed_a_b": [last.get("consumed_a"), last.get("consumed_b")],
        "records_processed_twice": max(0, int(last.get("consumed", 0)) - total),
        "rebalance_gap_s": (t_b - events["b_started"])
        if t_b is not None and events["b_started"] is not None
        else None,
        "machine_cores_busy": busy_cores(machine_start, machine_end),
        "agent_crashes": agent_crashes(stack) + agent_crashes(second),
        "worker_log": {**log_warnings(stack), **log_warnings(second)},
        "correctness": correctness,
        "timeline": samples,
    }


def compare(
    alerts: list[tuple[AlertEvent, float]], expected: dict[str, tuple[str, str, str, str]]
) -> dict[str, Any]:
    seen: dict[str, tuple[str, str, str, str]] = {}
    copies: Counter[str] = Counter()
    conflicting = 0
    conflicts: list[dict[str, Any]] = []
    for alert, ts in alerts:
        key = identity(alert)
        if alert.event_id in seen and seen[alert.event_id] != key:
            conflicting += 1
            conflicts.append(
                {"event_id": alert.event_id, "first": seen[alert.event_id], "again": key, "ts": ts}
            )
        seen.setdefault(alert.event_id, key)
        copies[alert.event_id] += 1
    missing = sorted(set(expected) - set(seen))
    extra = sorted(set(seen) - set(expected))
    differing = sum(1 for i in set(seen) & set(expected) if seen[i] != expected[i])
    return {
        "offline_events": len(expected),
        "worker_events": len(alerts),
        "worker_distinct_event_ids": len(seen),
        "missing": len(missing),
        "extra": len(extra),
        "content_differs_from_offline": differing,
        "duplicate_records": sum(n - 1 for n in copies.values() if n > 1),
        "duplicates_with_conflicting_content": conflicting,
        "missing_examples": [expected[i] for i in missing[:5]],
        "extra_examples": [seen[i] for i in extra[:5]],
        "differing_examples": [
            {"worker": seen[i], "offline": expected[i]}
            for i in sorted(set(seen) & set(expected))
            if seen[i] != expected[i]
        ][:5],
        "conflicting_examples": conflicts[:5],
        "identical": not missing and not extra and not differing and not conflicting,
    }


def to_markdown(results: dict[str, Any]) -> str:
    r = results["run"]
    control = results.get("control")

    def correct(x: dict[str, Any]) -> list[str]:
        c = x["correctness"]
        return [
            f"{c['offline_events']} / {c['worker_events']} / {c['worker_distinct_event_ids']}",
            f"{c['missing']} / {c['extra']} / {c['content_differs_from_offline']} / "
            f"{c['duplicates_with_conflicting_content']}",
            _fmt(c["duplicate_records"]),
            _fmt(c["identical"]),
        ]

    pair_rows = [
        ("raw kafka-python consume, records/s (baseline)", _fmt(r["raw_consume_records_per_s"])),
        ("one worker (A alone until B joins), records/s", _fmt(r["one_worker_records_per_s"])),
        ("two workers (B's first record until A is stopped), records/s",
         _fmt(r["pair_records_per_s"])),
        ("B alone after A stopped, records/s", _fmt(r["b_alone_after_a_stopped_records_per_s"])),
        ("overall: records / (first record to all committed s)",
         _fmt(r["overall_published_records_per_s"])),
        ("pair / one worker", _fmt(r["pair_vs_one_worker"], 2)),
        ("one worker / raw consume; pair / raw consume",
         f"{_fmt(r['one_worker_vs_raw_consume'], 3)}; {_fmt(r['pair_vs_raw_consume'], 3)}"),
        ("B started -> B's first record, s (startup + rebalance)", _fmt(r["rebalance_gap_s"], 1)),
        ("completed (committed lag 0) / stalled at s",
         f"{_fmt(r['completed'])} / {_fmt(r['events_s'].get('stalled'), 1)}"),
        ("records processed by A / B (twice: uncommitted at a rebalance)",
         f"{_fmt(r['records_processed_a_b'][0])} / {_fmt(r['records_processed_a_b'][1])} "
         f"({_fmt(r['records_processed_twice'])} twice)"),
    ]  # fmt: skip
    labels = [
        "alert events: offline / worker records / distinct ids",
        "missing / extra / content differs / conflicting duplicates",
        "duplicate alert records (same id, same content)",
        "alerts identical to the offline pipeline",
    ]
    lines = [
        f"# Rebalance benchmark ({results['when']}, {results['machine']}, commit "
        f"{results['commit']})",
        "",
        f"{r['records']:,} records ({r['beds']} beds x {r['seconds']} simulated s), published "
        f"before any worker starts. Worker B joins at {r['join_at']:.0%} consumed, worker A "
        f"is stopped at {r['stop_at']:.0%}. Load average at start "
        f"{results['load_average_at_start']}, at end {results['load_average_at_end']}.",
        "",
        "| figure | two workers, two rebalances |"
        + (" one worker alone (control) |" if control else ""),
        "|---|---|" + ("---|" if control else ""),
    ]
    for label, value in pair_rows:
        extra = ""
        if control:
            extra = " |"
            if label.startswith("raw"):
                extra = f" {_fmt(control['raw_consume_records_per_s'])} |"
            elif label.startswith("overall"):
                extra = f" {_fmt(control['overall_published_records_per_s'])} |"
            elif label.startswith("one worker / raw"):
                extra = f" {_fmt(control['one_worker_vs_raw_consume'], 3)} |"
            elif label.startswith("one worker (A"):
                extra = f" {_fmt(control['one_worker_records_per_s'])} |"
        lines.append(f"| {label} | {value} |{extra}")
    for label, value, other in zip(
        labels, correct(r), correct(control) if control else [""] * 4, strict=True
    ):
        lines.append(f"| {label} | {value} |" + (f" {other} |" if control else ""))
    lines.append(
        f"| machine busy, cores of 2 | {_fmt(r['machine_cores_busy'], 2)} |"
        + (f" {_fmt(control['machine_cores_busy'], 2)} |" if control else "")
    )
    lines.append(
        f"| worker agent crashes | {r['agent_crashes']} |"
        + (f" {control['agent_crashes']} |" if control else "")
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beds", type=int, default=300)
    parser.add_argument("--seconds", type=int, default=240, help="simulated seconds of load")
    parser.add_argument("--join-at", type=float, default=0.25, help="fraction consumed")
    parser.add_argument(
        "--stop-at", type=float, default=0.7, help="fraction consumed when A stops (1: never)"
    )
    parser.add_argument(
        "--control",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first drain the same records with one worker alone (throughput and alerts)",
    )
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=60,
        help="end the run when nothing was consumed or committed for this long",
    )
    args = parse_args(parser)
    results = results_header()
    print(f"generating {args.beds} beds x {args.seconds} s ...", flush=True)
    rows = generate_load(args.beds, args.seconds)
    print("offline pipeline on the same records ...", flush=True)
    expected = offline_events(rows, 4)
    with broker("rebalance") as kafka:
        if args.control:
            print("control: one worker alone on a fresh prefix ...", flush=True)
            results["control"] = bench_rebalance(
                kafka.bootstrap,
                kafka.workdir,
                rows,
                args.beds,
                args,
                join_at=None,
                expected=expected,
            )
        print("two workers ...", flush=True)
        results["run"] = bench_rebalance(
            kafka.bootstrap,
            kafka.workdir,
            rows,
            args.beds,
            args,
            join_at=args.join_at,
            expected=expected,
        )
    results["load_average_at_end"] = load_average()
    markdown = to_markdown(results)
    report_results(args, "rebalance", results, markdown)


if __name__ == "__main__":
    main()
