"""Benchmark of the stream worker through a real broker: throughput, alert latency, memory.

For each bed count (default 200 and 1000) the load is, per bed, 1 Hz vitals, 1 Hz NIRS
and a CRRT status every 10 s, plus the labs and charting the simulator emits. One
`vigil worker` process runs against a real Kafka (the project's local broker on free
ports unless KAFKA_BOOTSTRAP_SERVERS is set) and the script measures:

1. drain: records/s the worker sustains from the raw topics to alerts over
   --drain-seconds of simulated load published before it starts (fresh app id), from its
   first consumed record until it has consumed everything (vigil_samples_in_total), and
   until its committed offsets reach the end; beside it kafka-python's raw consume rate
   of the same topics in the same run, and the ratio;
2. live: the load published in real time (1x, paced per simulated second, every bed)
   for --live-seconds while the worker runs, with scenarios that raise alerts within
   two minutes; event-to-alert latency from the alerts topic (raised_at and the record's
   Kafka timestamp minus trigger_received_at, the wall time the trigger was published)
   and from the worker's own histogram; whether the worker kept up (backlog of
   published but unconsumed records at the end and at most, committed lag); when a bed
   count does not keep up, --probes shorter live runs look for the highest that does;
3. memory: worker RSS (VmRSS) after warm-up with no bed vs after the live run,
   (RSS_N - RSS_idle) / N; RocksDB memtables, faust buffers and the Python heap included.

The simulator sends NIRS every 5 s and CRRT every 60 s, only at the beds equipped with
them: the load generator here gives every bed both devices and runs the simulator's
beds with those device periods set to 1 s and 10 s (module constants of
services.sim.bed, restored afterwards), so the samples are the simulator's own.

Usage: .venv/bin/python bench/worker.py [--beds 200 1000] [--drain-seconds 120]
       [--live-seconds 120] [--probes 1]
Writes bench/results/worker-<timestamp>.json and .md. Figures, not asserts: see
bench/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

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
from schemas.alerts import AlertEvent  # noqa: E402
from services.kafka_io import reliable_producer  # noqa: E402
from services.sim.bed import SimulatedBed  # noqa: E402
from services.sim.scenarios import Equipment, Scenario, Side, equipment_of  # noqa: E402
from tests.support.stack import Stack  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)
"""Event time of simulated second 0 (the worker runs on event time only)."""
SENTINEL = datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
SENTINEL_JSON = b"2001-02-03T04:05:06.789000Z"
"""received_at of every generated record, replaced by the wall time it is published."""
RAW_TOPICS = ("vitals", "nirs", "crrt", "labs", "context")
NIRS_EVERY_S, CRRT_EVERY_S = 1, 10
SEED = 11

Row = list[tuple[int, str, bytes, bytes]]
"""One simulated second: (bed, topic base name, key, value) in bed order."""


# --- load ----------------------------------------------------------------------------


def fast_plan(beds: int) -> tuple[Scenario, ...]:
    """Scenarios that raise alerts early, on 7 beds in 10.

    Cerebral desaturation (2 in 10) raises the rSO2 alerts 70-110 s in; a silent
    monitor or NIRS sensor (1 in 10 each) the no-data alarms ~60 s after onset and
    their end when it is back; a fast-clotting CRRT filter (1 in 10) TMP high ~110 s
    in; hypotension (1 in 10) the MAP alarm only after its 5-min on-delay.
    """
    plan: list[Scenario] = []
    for bed in range(1, beds + 1):
        slot, onset = bed % 10, 5 + bed % 20
        side: Side = "left" if bed % 2 else "right"
        if slot in (1, 6):
            plan.append(Scenario("cerebral_desaturation", bed, onset, 600, 1.5, side=side))
        elif slot == 3:
            plan.append(Scenario("device_disconnect", bed, onset, 75, device="monitor"))
        elif slot == 9:
            plan.append(Scenario("device_disconnect", bed, onset, 75, device="nirs"))
        elif slot == 5:
            plan.append(Scenario("hypotension", bed, 5, 600))
        elif slot == 7:
            plan.append(Scenario("crrt_filter_clotting", bed, 0, 90, 3.0))
    return tuple(plan)


@contextmanager
def device_periods(nirs_every_s: int, crrt_every_s: int) -> Iterator[None]:
    """The simulator's NIRS and CRRT send periods set for the duration (then restored)."""
    import services.sim.bed as bed_module

    wanted = {"NIRS_EVERY_S": nirs_every_s, "CRRT_EVERY_S": crrt_every_s}
    missing = [name for name in wanted if not hasattr(bed_module, name)]
    if missing:
        raise RuntimeError(f"services.sim.bed has no {missing}: update bench/worker.py's load")
    saved = {name: getattr(bed_module, name) for name in wanted}
    for name, value in wanted.items():
        setattr(bed_module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(bed_module, name, value)


def bed_phase_s(bed: int) -> float:
    """When in each second bed ``bed`` samples and sends in the spread load
    (``paced_slices``): its slice of the second."""
    return (bed % SPREAD_SLICES) / SPREAD_SLICES


def _generate(job: tuple[int, int, int, bool]) -> list[Row]:
    """Beds first..last for ``seconds`` seconds, every bed with NIRS and CRRT; ``phased``:
    each bed's samples observed at its phase of the second (``bed_phase_s``)."""
    first, last, seconds, phased = job
    plan = fast_plan(last)
    with device_periods(NIRS_EVERY_S, CRRT_EVERY_S):
        beds = []
        for bed in range(first, last + 1):
            own = tuple(s for s in plan if s.bed == bed)
            drawn = equipment_of(SEED, bed, own)
            equipment = Equipment(drawn.arterial_line, drawn.central_line, nirs=True, crrt=True)
            beds.append(SimulatedBed(SEED, bed, "ICU1", own, equipment))
        rows: list[Row] = []
        for t in range(seconds):
            row: Row = []
            for simulated in beds:
                phase_s = bed_phase_s(simulated.bed) if phased else 0.0
                at = START + timedelta(seconds=t + phase_s)
                for record in simulated.step(t, at, SENTINEL):
                    value = record.value()
                    if SENTINEL_JSON not in value:
                        raise RuntimeError(f"no received_at to stamp in a {record.topic} record")
                    row.append((simulated.bed, record.topic, record.key.encode(), value))
            rows.append(row)
    return rows


def generate_load(beds: int, seconds: int, *, phased: bool = False) -> list[Row]:
    """The load of ``beds`` beds, generated in one process per core (``phased``: see
    ``_generate``).

    Bed b's records depend only on (seed, b), so the first n beds of this load are the
    load of n beds (:func:`subset`).
    """
    workers = max(1, min(os.cpu_count() or 1, beds))
    bounds = np.linspace(0, beds, workers + 1).astype(int)
    jobs = [
        (int(lo) + 1, int(hi), seconds, phased) for lo, hi in itertools.pairwise(bounds) if hi > lo
    ]
    with ProcessPoolExecutor(len(jobs)) as pool:
        parts = list(pool.map(_generate, jobs))
    return [[record for part in parts for record in part[t]] for t in range(seconds)]


def subset(load: list[Row], beds: int, seconds: int) -> list[Row]:
    return [[r for r in row if r[0] <= beds] for row in load[:seconds]]


def stamp_now() -> tuple[datetime, bytes]:
    now = datetime.now(UTC)
    return now, now.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


# --- observing the worker -------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = float(sum(values[:8]))
    return total - values[3] - values[4], total


def busy_cores(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Cores busy on average between two :func:`machine_cpu` readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total * (os.cpu_count() or 1) if total > 0 else 0.0


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]] | None:
    """The worker's /metrics as sample name -> [(labels, value)]; None when not serving."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def total_of(samples: dict[str, list[tuple[dict[str, str], float]]] | None, name: str) -> float:
    return sum(v for _labels, v in (samples or {}).get(name, []))


def consumed(port: int) -> float | None:
    """Records the worker has taken from the raw topics (vigil_samples_in_total)."""
    samples = scrape(port)
    return None if samples is None else total_of(samples, "vigil_samples_in_total")


def histogram_quantiles(
    samples: dict[str, list[tuple[dict[str, str], float]]] | None,
    name: str,
    quantiles: Sequence[float] = (0.5, 0.95, 0.99),
    where: dict[str, str] | None = None,
) -> dict[str, float | None]:
    """Quantiles of a Prometheus histogram (the series with labels ``where``),
    interpolated within buckets as ``histogram_quantile`` does (None above the highest
    finite bucket)."""
    wanted = (where or {}).items()

    def series(suffix: str) -> list[tuple[dict[str, str], float]]:
        found = (samples or {}).get(f"{name}{suffix}", [])
        return [(labels, v) for labels, v in found if wanted <= labels.items()]

    buckets = sorted((float(labels["le"]), value) for labels, value in series("_bucket"))
    count = buckets[-1][1] if buckets else 0.0
    total = sum(v for _labels, v in series("_sum"))
    found: dict[str, float | None] = {
        "count": count,
        "mean_s": total / count if count else None,
    }
    for q in quantiles:
        rank, lower, below, value = q * count, 0.0, 0.0, None
        for upper, cumulative in buckets:
            if cumulative >= rank and count:
                if upper == float("inf"):
                    found[f"p{round(q * 100)}_above_s"] = lower
                elif cumulative > below:
                    value = lower + (upper - lower) * (rank - below) / (cumulative - below)
                break
            lower, below = upper, cumulative
        found[f"p{round(q * 100)}_s"] = value
    return found


class LagProbe:
    """Committed lag of a consumer group over several topics, with long-lived clients."""

    def __init__(self, bootstrap: str, group: str, topics: Sequence[str], partitions: int):
        self.group = group
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-lag")
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="bench-lag")
        self.tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]

    def lag(self) -> int | None:
        """Records not committed yet; None until the group committed on every non-empty
        partition."""
        try:
            committed = self.admin.list_group_offsets(self.group).get(self.group, {})
            ends = self.consumer.end_offsets(self.tps)
        except Exception:  # coordinator not ready: unknown, not zero
            return None
        lag = 0
        for tp in self.tps:
            if ends[tp] == 0:
                continue
            meta = committed.get(tp)
            if meta is None or meta.offset < 0:
                return None
            lag += ends[tp] - meta.offset
        return lag

    def stable(self) -> bool:
        """The group has members and a settled assignment."""
        try:
            info = self.admin.describe_groups([self.group]).get(self.group) or {}
        except Exception:  # coordinator not ready yet
            return False
        return info.get("group_state") == "Stable" and bool(info.get("members"))

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


def new_stack(bootstrap: str, workdir: Path, tag: str) -> Stack:
    run = uuid.uuid4().hex[:6]
    stack = Stack(bootstrap, workdir / tag, f"bench-{run}-{tag}.", app_id=f"bench-{tag}-{run}")
    stack.workdir.mkdir(parents=True, exist_ok=True)
    stack.create_topics()
    return stack


@dataclass
class Deliveries:
    """Records Kafka acknowledged or refused (counted on the producer's I/O thread)."""

    acked: int = 0
    failed: int = 0
    first_error: str | None = None

    def on_ack(self, _metadata: Any) -> None:
        self.acked += 1

    def on_error(self, exc: BaseException) -> None:
        self.failed += 1
        self.first_error = self.first_error or repr(exc)


def publish(producer: Any, stack: Stack, row: Row, deliveries: Deliveries) -> datetime:
    """Send records, each stamped received_at = the wall time it is handed to the
    producer (as an adapter stamps a message when it receives it); returns the first
    stamp. (A stamp per batch would count the producer's own time for the batch, up
    to 0.5 s for 2,000 records on this machine, as the worker's latency.)"""
    first, _stamp = stamp_now()
    names = {base: stack.registry.name(base) for base in RAW_TOPICS}
    for _bed, topic, key, value in row:
        stamp = stamp_now()[1]
        future = producer.send(names[topic], key=key, value=value.replace(SENTINEL_JSON, stamp, 1))
        future.add_callback(deliveries.on_ack)
        future.add_errback(deliveries.on_error)
    return first


PACINGS = ("spread", "burst")
SPREAD_SLICES = 20
"""``spread``: a simulated second is sent in this many slices of beds, 50 ms apart."""


def paced_slices(row: Row, pacing: str) -> list[tuple[float, Row]]:
    """A simulated second's records in the slices sent over that wall second, each with
    its offset into the second.

    ``burst``: every bed's records at the start of the second (their devices in
    lock-step: the worst case). ``spread``: the beds in ``SPREAD_SLICES`` groups evenly
    over the second, as independent monitors' 1-Hz phases are, each sent at the phase
    its samples were observed at (``bed_phase_s``); a bed's records stay in one slice,
    in order.

    >>> row = [(bed, "vitals", b"k", b"v") for bed in (1, 1, 2, 23)]
    >>> [(at, len(part)) for at, part in paced_slices(row, "burst")]
    [(0.0, 4)]
    >>> [(at, len(part)) for at, part in paced_slices(row, "spread")]
    [(0.05, 2), (0.1, 1), (0.15, 1)]
    """
    if pacing == "burst":
        return [(0.0, row)]
    groups: dict[float, Row] = {}
    for record in row:
        groups.setdefault(bed_phase_s(record[0]), []).append(record)
    return sorted(groups.items())


def publish_rows(
    bootstrap: str, stack: Stack, rows: list[Row], client_id: str
) -> tuple[float, Deliveries]:
    """Publish ``rows`` at full speed (see ``publish``) and flush: records/s, and what
    Kafka acknowledged or refused."""
    total = sum(map(len, rows))
    producer = reliable_producer(bootstrap, client_id=client_id)
    deliveries = Deliveries()
    try:
        began = time.perf_counter()
        for row in rows:
            publish(producer, stack, row, deliveries)
        producer.flush()
        publish_rate = total / (time.perf_counter() - began)
    finally:
        producer.close()
    return publish_rate, deliveries


def topic_records(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Records on each topic (sum of end offsets; every partition the topic has)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="bench-count")
    try:
        found = {}
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic) or set()
            ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
            found[topic] = int(sum(ends.values()))
        return found
    finally:
        consumer.close()


def outputs(stack: Stack) -> dict[str, int]:
    """Records the worker wrote: alerts, features, dead letters, state snapshots."""
    names = {
        "alerts": stack.registry.name("alerts"),
        "features": stack.registry.name("features"),
        "deadletter": stack.registry.name("deadletter"),
        "state_snapshots": f"{stack.app_id}-patient-state-changelog",
    }
    counts = topic_records(stack.bootstrap, list(names.values()))
    return {label: counts[name] for label, name in names.items()}


def log_warnings(stack: Stack) -> dict[str, int]:
    """WARNING/ERROR lines of the worker's log, by message (numbers stripped)."""
    found: Counter[str] = Counter()
    for line in stack.worker_log(tail_chars=None).splitlines():
        try:  # the worker logs JSON lines (services.observability)
            entry = json.loads(line)
            level, message = f"[{entry['level']}]", str(entry["message"])
        except (ValueError, KeyError, TypeError):
            level, message = next(
                ((lv, line.split(lv, 1)[1]) for lv in ("[WARNING]", "[ERROR]") if lv in line),
                ("", ""),
            )
        if level in ("[WARNING]", "[ERROR]"):
            digitless = "".join(c for c in message.strip() if not c.isdigit())
            found[f"{level} {digitless[:120]}"] += 1
    return dict(found.most_common(8))


def agent_crashes(stack: Stack) -> int:
    """Times the worker's agent crashed (faust restarts it; its batch is acknowledged)."""
    return stack.worker_log(tail_chars=None).count("Crashed reason=")


def growth_per_record(timeline: list[dict[str, Any]], count: str) -> float | None:
    """RSS growth in KB per record consumed, over a timeline (least squares)."""
    points = [(t[count], t["rss_mb"]) for t in timeline if t.get(count) is not None]
    if len(points) < 3 or points[-1][0] - points[0][0] <= 0:
        return None
    x, y = np.array(points, dtype=float).T
    return float(np.polyfit(x, y, 1)[0] * 1024)


def worker_died(stack: Stack, proc: subprocess.Popen[bytes]) -> RuntimeError:
    return RuntimeError(f"worker exited {proc.returncode}:\n{stack.worker_log()}")


def start_ready_worker(stack: Stack, probe: LagProbe) -> subprocess.Popen[bytes]:
    """Start the stack's worker and wait (120 s at most) until it serves its metrics and
    its consumer group is Stable."""
    proc = stack.start_worker()
    deadline = time.monotonic() + 120
    while not (scrape(stack.metrics_port) is not None and probe.stable()):
        if proc.poll() is not None:
            raise worker_died(stack, proc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker not ready after 120 s:\n{stack.worker_log()}")
        time.sleep(0.5)
    return proc


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    """p50/p95/p99/max of seconds, in ms."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    array = np.asarray(values) * scale
    return {
        "p50_ms": float(np.percentile(array, 50)),
        "p95_ms": float(np.percentile(array, 95)),
        "p99_ms": float(np.percentile(array, 99)),
        "max_ms": float(array.max()),
    }


# --- 1. drain ----------------------------------------------------------------------


def bench_drain(
    bootstrap: str, workdir: Path, rows: list[Row], beds: int, timeout_s: float
) -> dict[str, Any]:
    stack = new_stack(bootstrap, workdir, f"drain{beds}")
    total = sum(map(len, rows))
    publish_rate, deliveries = publish_rows(bootstrap, stack, rows, client_id="bench-worker")
    if deliveries.failed:
        raise RuntimeError(
            f"{deliveries.failed} records not acknowledged: {deliveries.first_error}"
        )
    names = [stack.registry.name(t) for t in RAW_TOPICS]
    baseline = raw_consume_rate(bootstrap, names, stack.partitions, total)
    print(
        f"  published {total:,} records at {publish_rate:,.0f}/s; raw consume {baseline:,.0f}/s",
        flush=True,
    )

    probe = LagProbe(bootstrap, stack.app_id, names, stack.partitions)
    timeline: list[dict[str, Any]] = []
    first = all_in = committed = None
    rss_after = cpu_used = 0.0
    cores = 0.0
    try:
        proc = stack.start_worker()
        started = time.monotonic()
        cpu_start, machine_start = 0.0, machine_cpu()
        next_sample = 0.0
        while time.monotonic() - started < timeout_s:
            if proc.poll() is not None:
                raise worker_died(stack, proc)
            now = time.monotonic() - started
            taken = consumed(stack.metrics_port) or 0.0
            if first is None and taken > 0:
                first = now
                cpu_start, machine_start = cpu_seconds(proc.pid), machine_cpu()
            lag = None
            if now >= next_sample or taken >= total:
                lag = probe.lag()
                timeline.append(
                    {
                        "t_s": round(now, 2),
                        "consumed": int(taken),
                        "committed_lag": lag,
                        "rss_mb": round(rss_bytes(proc.pid) / 2**20, 1),
                        "cpu_s": round(cpu_seconds(proc.pid), 2),
                    }
                )
                next_sample = now + 1.0
            # everything consumed, or committed (records lost to an agent crash are
            # committed without ever being counted as consumed)
            if all_in is None and (taken >= total or (lag == 0 and first is not None)):
                all_in = now
                cpu_used = cpu_seconds(proc.pid) - cpu_start
                cores = busy_cores(machine_start, machine_cpu())
                rss_after = rss_bytes(proc.pid)
            if all_in is not None and lag == 0:
                committed = now
                break
            # each scrape of /metrics costs the worker ~10 ms of CPU: every 0.2 s took 6-7 %
            # of its drain CPU (py-spy); once a second is 1 %, at +-1 s of timing
            time.sleep(1.0)
        metrics = scrape(stack.metrics_port)
    finally:
        stack.stop_all()
        probe.close()
    written = outputs(stack)
    busy = (all_in - first) if all_in is not None and first is not None else None
    # between 20 % and 80 % consumed: no start-up ramp, no tail
    steady = [s for s in timeline if 0.2 * total <= s["consumed"] <= 0.8 * total]
    steady_rate = (
        (steady[-1]["consumed"] - steady[0]["consumed"]) / (steady[-1]["t_s"] - steady[0]["t_s"])
        if len(steady) >= 3
        else None
    )
    return {
        "records": total,
        "records_per_bed_s": total / beds / len(rows),
        "publish_records_per_s": publish_rate,
        "raw_consume_records_per_s": baseline,
        "worker_startup_s": first,
        "worker_records_per_s": total / busy if busy else None,
        "worker_records_per_s_steady": steady_rate,
        "worker_records_per_s_incl_startup_and_commit": total / committed if committed else None,
        "worker_vs_raw_consume": total / busy / baseline if busy else None,
        "worker_cpu_cores_while_draining": cpu_used / busy if busy else None,
        "machine_cores_busy_while_draining": cores,
        "beds_sustained_estimate": total / busy / (total / beds / len(rows)) if busy else None,
        "rss_after_drain_mb": rss_after / 2**20,
        "rss_growth_kb_per_record": growth_per_record(timeline, "consumed"),
        "alert_events": total_of(metrics, "vigil_alert_events_total"),
        "dead_letters": total_of(metrics, "vigil_dead_letters_total"),
        "written": written,
        "state_snapshots_per_record": written["state_snapshots"] / total,
        "worker_log": log_warnings(stack),
        "completed": committed is not None,
        "records_committed_not_consumed": total - timeline[-1]["consumed"] if committed else None,
        "agent_crashes": agent_crashes(stack),
        "timeline": timeline,
    }


# --- 2 + 3. live -----------------------------------------------------------------------


@dataclass
class LiveMonitor:
    """Samples the worker every second while the load is published (own thread)."""

    stack: Stack
    proc: subprocess.Popen[bytes]
    probe: LagProbe
    deliveries: Deliveries
    began: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        tick = 0
        while not self.stop.wait(1.0):
            if self.proc.poll() is not None:
                return
            published = self.deliveries.acked
            taken = consumed(self.stack.metrics_port)
            sample: dict[str, Any] = {
                "t_s": round(time.monotonic() - self.began, 1),
                "published": published,
                "consumed": None if taken is None else int(taken),
                "backlog": None if taken is None else max(0, published - int(taken)),
                "rss_mb": round(rss_bytes(self.proc.pid) / 2**20, 1),
                "cpu_s": round(cpu_seconds(self.proc.pid), 2),
            }
            if tick % 3 == 0:
                sample["committed_lag"] = self.probe.lag()
            self.samples.append(sample)
            tick += 1


def read_alerts(stack: Stack) -> list[tuple[AlertEvent, float]]:
    """Every alert event on the topic with its Kafka timestamp (s since the epoch)."""
    consumer = KafkaConsumer(
        stack.registry.name("alerts"),
        bootstrap_servers=stack.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    found: list[tuple[AlertEvent, float]] = []
    try:
        deadline, last = time.monotonic() + 120, time.monotonic()
        while time.monotonic() - last < 3.0 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=250).values():
                for record in batch:
                    found.append(
                        (AlertEvent.model_validate_json(record.value), record.timestamp / 1000)
                    )
                    last = time.monotonic()
    finally:
        consumer.close()
    return found


def alert_latencies(
    alerts: list[tuple[AlertEvent, float]], wall_of: list[datetime]
) -> dict[str, Any]:
    seen: set[str] = set()
    raised, kafka, watchdog = [], [], []
    by_rule: Counter[str] = Counter()
    for alert, kafka_ts in alerts:
        if alert.event_id in seen:  # at-least-once: a repeat has the same id
            continue
        seen.add(alert.event_id)
        by_rule[f"{alert.rule_id} {alert.phase}"] += 1
        if alert.trigger_received_at is not None:
            raised.append((alert.raised_at - alert.trigger_received_at).total_seconds())
            kafka.append(kafka_ts - alert.trigger_received_at.timestamp())
            continue
        # a "no data" alarm raised on a watermark tick: from the wall time the tick's
        # event time was published
        second = int((alert.triggered_at - START).total_seconds())
        if 0 <= second < len(wall_of):
            watchdog.append((alert.raised_at - wall_of[second]).total_seconds())
    return {
        "alert_events": len(seen),
        "record_triggered": len(raised),
        "raised_minus_received": percentiles(raised),
        "kafka_timestamp_minus_received": percentiles(kafka),
        "watchdog_events": len(watchdog),
        "watchdog_raised_minus_tick_published": percentiles(watchdog),
        "by_rule_and_phase": dict(sorted(by_rule.items())),
    }


def bench_live(
    bootstrap: str,
    workdir: Path,
    rows: list[Row],
    beds: int,
    *,
    warmup_s: float,
    settle_s: float,
    pacing: str,
) -> dict[str, Any]:
    stack = new_stack(bootstrap, workdir, f"live{beds}")
    names = [stack.registry.name(t) for t in RAW_TOPICS]
    probe = LagProbe(bootstrap, stack.app_id, names, stack.partitions)
    producer = reliable_producer(bootstrap, client_id="bench-worker")
    monitor: LiveMonitor | None = None
    thread: threading.Thread | None = None
    per_second = sum(map(len, rows)) / len(rows)
    try:
        proc = start_ready_worker(stack, probe)
        time.sleep(warmup_s)
        rss_idle = rss_bytes(proc.pid)
        cpu_idle, machine_idle = cpu_seconds(proc.pid), machine_cpu()

        deliveries = Deliveries()
        monitor = LiveMonitor(stack, proc, probe, deliveries)
        thread = threading.Thread(target=monitor.run, daemon=True)
        thread.start()
        wall_of: list[datetime] = []
        behind = 0.0
        began = time.monotonic() + 0.2
        for n, row in enumerate(rows):
            for k, (phase_s, part) in enumerate(paced_slices(row, pacing)):
                delay = began + n + phase_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                behind = max(behind, -delay)
                sent_at = publish(producer, stack, part, deliveries)
                if k == 0:
                    wall_of.append(sent_at)
        producer.flush()
        published_s = time.monotonic() - began
        cpu_live, machine_live = cpu_seconds(proc.pid), machine_cpu()
        at_end = consumed(stack.metrics_port) or 0.0
        backlog_at_end = max(0, deliveries.acked - int(at_end))
        settle_began = time.monotonic()
        caught_up_after = None
        while time.monotonic() - settle_began < settle_s:
            if (consumed(stack.metrics_port) or 0.0) >= deliveries.acked:
                caught_up_after = time.monotonic() - settle_began
                break
            if probe.lag() == 0:  # all committed, though not all counted: see lost below
                break
            time.sleep(0.5)
        time.sleep(2.0)  # the last batch's alerts
        rss_after = rss_bytes(proc.pid)
        metrics = scrape(stack.metrics_port)
        final_lag = probe.lag()
        final_consumed = int(total_of(metrics, "vigil_samples_in_total"))
    finally:
        if monitor is not None:
            monitor.stop.set()
        if thread is not None:
            thread.join(timeout=10)
        producer.close()
        stack.stop_all()
        probe.close()
    alerts = read_alerts(stack)
    written = outputs(stack)
    backlogs = [s["backlog"] for s in monitor.samples if s.get("backlog") is not None]
    lags = [s["committed_lag"] for s in monitor.samples if s.get("committed_lag") is not None]
    # kept up: what was published had been consumed within a few seconds of load
    kept_up = backlog_at_end <= 5 * per_second
    return {
        "beds": beds,
        "seconds": len(rows),
        "records_per_s": per_second,
        "publisher_max_behind_s": behind,
        "records_acked": deliveries.acked,
        "records_not_acked": deliveries.failed,
        "first_publish_error": deliveries.first_error,
        "publish_wall_s": published_s,
        "kept_up": kept_up,
        "backlog_at_end_records": backlog_at_end,
        "backlog_at_end_s_of_load": backlog_at_end / per_second,
        "backlog_max_records": max(backlogs, default=None),
        "caught_up_s_after_publishing": caught_up_after,
        "committed_lag_max": max(lags, default=None),
        "committed_lag_at_end": final_lag,
        "records_committed_not_consumed": (
            deliveries.acked - final_consumed if final_lag == 0 else None
        ),
        "agent_crashes": agent_crashes(stack),
        "worker_cpu_cores": (cpu_live - cpu_idle) / published_s,
        "machine_cores_busy": busy_cores(machine_idle, machine_live),
        "latency": alert_latencies(alerts, wall_of),
        "worker_histogram": histogram_quantiles(metrics, "vigil_event_to_alert_latency_seconds"),
        "worker_stages": {
            stage: histogram_quantiles(
                metrics, "vigil_worker_stage_seconds", where={"stage": stage}
            )
            for stage in ("to_worker", "merge_wait", "batch_to_ack")
        },
        "dead_letters": total_of(metrics, "vigil_dead_letters_total"),
        "written": written,
        "state_snapshots_per_record": written["state_snapshots"] / max(1, deliveries.acked),
        "worker_log": log_warnings(stack),
        "memory": {
            "rss_idle_mb": rss_idle / 2**20,
            "rss_after_mb": rss_after / 2**20,
            "rss_per_bed_kb": max(0, rss_after - rss_idle) / beds / 1024,
            "rss_growth_kb_per_record": growth_per_record(monitor.samples, "consumed"),
        },
        "timeline": monitor.samples,
    }


# --- the run ------------------------------------------------------------------------


def probe_beds(runs: dict[int, dict[str, Any]], drains: dict[int, dict[str, Any]]) -> int | None:
    """A bed count between the highest that kept up and the lowest that did not, guided
    by the drain throughput; None when there is nothing left to look for."""
    kept = [n for n, r in runs.items() if r["kept_up"]]
    failed = [n for n, r in runs.items() if not r["kept_up"]]
    if not failed:
        return None
    low, high = max(kept, default=0), min(failed)
    if low >= high:
        return None
    estimates = [
        d["beds_sustained_estimate"] for d in drains.values() if d.get("beds_sustained_estimate")
    ]
    guess = 0.8 * min(estimates) if estimates else (low + high) / 2
    if not low < guess < high:
        guess = (low + high) / 2
    beds = int(guess // 50 * 50) or int(guess)
    return beds if low < beds < high else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beds", type=int, nargs="+", default=[200, 1000])
    parser.add_argument(
        "--drain-seconds",
        type=int,
        default=120,
        help="simulated seconds published before the drain run",
    )
    parser.add_argument(
        "--live-seconds",
        type=int,
        default=120,
        help="wall seconds of real-time load in the live run",
    )
    parser.add_argument(
        "--probes",
        type=int,
        default=1,
        help="extra live runs looking for the highest bed count kept up",
    )
    parser.add_argument("--probe-seconds", type=int, default=90)
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=45,
        help="longest wait after the live load for the worker to catch up",
    )
    parser.add_argument(
        "--pacing",
        choices=PACINGS,
        default="spread",
        help="live load: beds spread over each second (independent monitors), or all at "
        "its start (burst: devices in lock-step, the worst case)",
    )
    parser.add_argument("--warmup-seconds", type=float, default=5)
    parser.add_argument("--drain-timeout", type=float, default=600)
    args = parse_args(parser)

    beds = sorted(set(args.beds))
    seconds = max(args.drain_seconds, args.live_seconds, args.probe_seconds)
    results: dict[str, Any] = {
        **results_header(),
        "load": f"per bed: vitals 1 Hz, NIRS {NIRS_EVERY_S} s, CRRT {CRRT_EVERY_S} s, plus "
        "simulated labs/charting; scenarios: bench/worker.py fast_plan",
        "drain_seconds": args.drain_seconds,
        "live_seconds": args.live_seconds,
        "pacing": args.pacing,
    }
    print(f"generating {max(beds)} beds x {seconds} s ...", flush=True)
    began = time.perf_counter()
    load = generate_load(max(beds), seconds, phased=args.pacing == "spread")
    records = sum(map(len, load))
    results["generate_s"] = time.perf_counter() - began
    print(f"  {records:,} records in {results['generate_s']:.0f} s", flush=True)

    drains: dict[int, dict[str, Any]] = {}
    lives: dict[int, dict[str, Any]] = {}
    with broker("worker") as kafka:
        if kafka.start_s is not None:
            results["broker_start_s"] = kafka.start_s
        for n in beds:
            print(f"{n} beds: drain of {args.drain_seconds} s of load ...", flush=True)
            drains[n] = bench_drain(
                kafka.bootstrap,
                kafka.workdir,
                subset(load, n, args.drain_seconds),
                n,
                args.drain_timeout,
            )
            print(summary(drains[n]), flush=True)
            print(f"{n} beds: live at 1x for {args.live_seconds} s ...", flush=True)
            lives[n] = bench_live(
                kafka.bootstrap,
                kafka.workdir,
                subset(load, n, args.live_seconds),
                n,
                warmup_s=args.warmup_seconds,
                settle_s=args.settle_seconds,
                pacing=args.pacing,
            )
            print(summary(lives[n]), flush=True)
        probes: dict[int, dict[str, Any]] = {}
        for _ in range(args.probes):
            n_probe = probe_beds({**lives, **probes}, drains)
            if n_probe is None:
                break
            print(f"probe: {n_probe} beds live at 1x for {args.probe_seconds} s ...", flush=True)
            probes[n_probe] = bench_live(
                kafka.bootstrap,
                kafka.workdir,
                subset(load, n_probe, args.probe_seconds),
                n_probe,
                warmup_s=args.warmup_seconds,
                settle_s=args.settle_seconds,
                pacing=args.pacing,
            )
            print(summary(probes[n_probe]), flush=True)
    results["load_average_at_end"] = load_average()
    results["runs"] = {str(n): {"drain": drains[n], "live": lives[n]} for n in beds}
    results["probes"] = {str(n): r for n, r in probes.items()}
    all_live = {**lives, **probes}
    kept = [n for n, r in all_live.items() if r["kept_up"]]
    failed = [n for n, r in all_live.items() if not r["kept_up"]]
    results["highest_beds_kept_up"] = max(kept, default=None)
    results["lowest_beds_not_kept_up"] = min(failed, default=None)
    markdown = to_markdown(results)
    report_results(args, "worker", results, markdown)


def summary(figures: dict[str, Any]) -> str:
    shown = {k: v for k, v in figures.items() if k != "timeline"}
    return json.dumps(shown, indent=2, default=str)


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _histogram_ms(histogram: dict[str, Any], q: int) -> str:
    value, above = histogram.get(f"p{q}_s"), histogram.get(f"p{q}_above_s")
    if value is None and above is not None:
        return f"> {above * 1000:,.0f}"
    return _fmt(None if value is None else value * 1000)


def _ms(figures: dict[str, Any]) -> str:
    return " / ".join(_fmt(figures.get(k)) for k in ("p50_ms", "p95_ms", "p99_ms"))


def to_markdown(results: dict[str, Any]) -> str:
    runs: dict[str, dict[str, Any]] = results["runs"]
    heads = list(runs)
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cells: list[str]) -> None:
        rows.append((label, cells))

    drain = [runs[n]["drain"] for n in heads]
    live = [runs[n]["live"] for n in heads]
    row("load, records/s at 1x", [_fmt(r["records_per_s"]) for r in live])
    row("drain: records pre-published", [_fmt(d["records"]) for d in drain])
    row(
        "drain: worker records/s (first record to all consumed)",
        [_fmt(d["worker_records_per_s"]) for d in drain],
    )
    row(
        "drain: worker records/s, steady (20-80 % consumed)",
        [_fmt(d["worker_records_per_s_steady"]) for d in drain],
    )
    row(
        "drain: worker records/s incl. startup and final commit",
        [_fmt(d["worker_records_per_s_incl_startup_and_commit"]) for d in drain],
    )
    row(
        "drain: raw kafka-python consume records/s (same topics)",
        [_fmt(d["raw_consume_records_per_s"]) for d in drain],
    )
    row("drain: worker / raw consume", [_fmt(d["worker_vs_raw_consume"], 3) for d in drain])
    row("drain: worker CPU, cores", [_fmt(d["worker_cpu_cores_while_draining"], 2) for d in drain])
    row(
        "drain: machine busy, cores of 2",
        [_fmt(d["machine_cores_busy_while_draining"], 2) for d in drain],
    )
    row(
        "drain: beds one worker sustains (records/s / per-bed rate)",
        [_fmt(d["beds_sustained_estimate"]) for d in drain],
    )
    row("live: kept up (backlog at end <= 5 s of load)", [_fmt(r["kept_up"]) for r in live])
    row(
        "live: backlog at end, records (s of load)",
        [
            f"{_fmt(r['backlog_at_end_records'])} ({_fmt(r['backlog_at_end_s_of_load'], 1)})"
            for r in live
        ],
    )
    row("live: max backlog, records", [_fmt(r["backlog_max_records"]) for r in live])
    row(
        "live: committed lag max / at end",
        [f"{_fmt(r['committed_lag_max'])} / {_fmt(r['committed_lag_at_end'])}" for r in live],
    )
    row("live: worker CPU, cores", [_fmt(r["worker_cpu_cores"], 2) for r in live])
    row(
        "live: alert events (record-triggered / no-data ticks)",
        [
            f"{r['latency']['alert_events']} ({r['latency']['record_triggered']} / "
            f"{r['latency']['watchdog_events']})"
            for r in live
        ],
    )
    row(
        "live: raised_at - trigger_received_at p50/p95/p99 ms",
        [_ms(r["latency"]["raised_minus_received"]) for r in live],
    )
    row(
        "live: Kafka timestamp - trigger_received_at p50/p95/p99 ms",
        [_ms(r["latency"]["kafka_timestamp_minus_received"]) for r in live],
    )
    row(
        "live: worker histogram (to Kafka ack) p50/p95/p99 ms",
        [" / ".join(_histogram_ms(r["worker_histogram"], q) for q in (50, 95, 99)) for r in live],
    )
    for stage in ("to_worker", "merge_wait", "batch_to_ack"):
        row(
            f"live: worker stage {stage} p50/p95/p99 ms",
            [
                " / ".join(_histogram_ms(r["worker_stages"][stage], q) for q in (50, 95, 99))
                for r in live
            ],
        )
    row(
        "live: no-data alarms, raised - tick published p50/p99 ms",
        [
            " / ".join(
                _fmt(r["latency"]["watchdog_raised_minus_tick_published"][k])
                for k in ("p50_ms", "p99_ms")
            )
            for r in live
        ],
    )
    row(
        "memory: RSS idle / after live run, MB",
        [f"{_fmt(r['memory']['rss_idle_mb'])} / {_fmt(r['memory']['rss_after_mb'])}" for r in live],
    )
    row(
        "memory: (RSS_N - RSS_idle) / N, KB per bed",
        [_fmt(r["memory"]["rss_per_bed_kb"]) for r in live],
    )
    if len(heads) >= 2:
        low, high = live[0]["memory"], live[-1]["memory"]
        beds_apart = int(heads[-1]) - int(heads[0])
        marginal = (high["rss_after_mb"] - low["rss_after_mb"]) * 1024 / beds_apart
        row(
            f"memory: marginal KB per bed ({heads[0]} -> {heads[-1]} beds)",
            [_fmt(marginal)] + [""] * (len(heads) - 1),
        )
    row("memory: RSS after the drain run, MB", [_fmt(d["rss_after_drain_mb"]) for d in drain])
    row(
        "memory: RSS growth per record consumed, KB (drain / live)",
        [
            f"{_fmt(d['rss_growth_kb_per_record'], 1)} / "
            f"{_fmt(r['memory']['rss_growth_kb_per_record'], 1)}"
            for d, r in zip(drain, live, strict=True)
        ],
    )
    row(
        "state snapshots written per record consumed (drain / live)",
        [
            f"{_fmt(d['state_snapshots_per_record'], 3)} / "
            f"{_fmt(r['state_snapshots_per_record'], 3)}"
            for d, r in zip(drain, live, strict=True)
        ],
    )
    row("live: records not acknowledged by Kafka", [_fmt(r["records_not_acked"]) for r in live])
    row(
        "records committed, never consumed (drain / live)",
        [
            f"{_fmt(d['records_committed_not_consumed'])} / "
            f"{_fmt(r['records_committed_not_consumed'])}"
            for d, r in zip(drain, live, strict=True)
        ],
    )
    row(
        "worker agent crashes (drain / live)",
        [f"{d['agent_crashes']} / {r['agent_crashes']}" for d, r in zip(drain, live, strict=True)],
    )

    lines = [
        f"# Worker benchmark ({results['when']}, {results['machine']}, commit {results['commit']})",
        "",
        f"Load: {results['load']}. Drain: {results['drain_seconds']} simulated s published "
        f"first; live: {results['live_seconds']} s at 1x, paced "
        f"{results.get('pacing', 'burst')}. Load average (1 min) at start "
        f"{results['load_average_at_start'][0]:.2f}, at end "
        f"{results['load_average_at_end'][0]:.2f}.",
        "",
        "| figure | " + " | ".join(f"{n} beds" for n in heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    for n, probe in results.get("probes", {}).items():
        lines += [
            "",
            f"Probe, {n} beds live for {probe['seconds']} s: kept up {_fmt(probe['kept_up'])}, "
            f"backlog at end {_fmt(probe['backlog_at_end_records'])} records, alert latency "
            f"p50/p95/p99 {_ms(probe['latency']['raised_minus_received'])} ms, agent crashes "
            f"{probe['agent_crashes']}, records committed but never consumed "
            f"{_fmt(probe['records_committed_not_consumed'])}.",
        ]
    lines += [
        "",
        f"Highest bed count kept up at 1x: {_fmt(results['highest_beds_kept_up'])}; "
        f"lowest not kept up: {_fmt(results['lowest_beds_not_kept_up'])}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
