"""Prometheus metrics of the stream worker (no patient identifiers in labels)."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from streams.patient import PatientState
    from streams.rules import RuleSet

log = logging.getLogger(__name__)

SAMPLES_IN = Counter("vigil_samples_in_total", "Messages consumed from raw topics", ["source"])
SAMPLES_LATE = Counter(
    "vigil_samples_late_total", "Messages not after the patient's last event time", ["source"]
)
DEAD_LETTERS = Counter(
    "vigil_dead_letters_total",
    "Records refused to the dead-letter topic, by input",
    ["source", "reason"],
)
ALERT_EVENTS = Counter(
    "vigil_alert_events_total", "Alert events published", ["rule_id", "phase", "priority"]
)
EVENT_TO_ALERT_LATENCY = Histogram(
    "vigil_event_to_alert_latency_seconds",
    "Wall time from the triggering sample's received_at to Kafka acknowledging its alert",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
WORKER_STAGE_LATENCY = Histogram(
    "vigil_worker_stage_seconds",
    "Wall time of a record's stages in the worker: 'to_worker' from a vital sign's"
    " received_at to its batch being taken; 'merge_wait' from its batch being taken to"
    " its release by the event-time merge; 'batch_to_ack' from the triggering batch"
    " being taken to Kafka acknowledging its alert",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0),
)
FEATURE_SNAPSHOTS = Counter("vigil_feature_snapshots_total", "Feature snapshots published")
RECORDS_DEFERRED = Counter(
    "vigil_records_deferred_total",
    "Records of a previous assignment handed over during a rebalance: not applied,"
    " read again from the committed offset",
)
RECORDS_REREAD = Counter(
    "vigil_records_reread_total",
    "Records read again after recovery's seek to the committed offset, already applied: skipped",
)

# --- worker status: lag, alarms shown, liveness and readiness ------------------------

CONSUMER_LAG = Gauge(
    "vigil_consumer_lag_records",
    "Records in an input partition after the last one this worker read (highwater - next)",
    ["topic", "partition"],
)
ACTIVE_ALARMS = Gauge(
    "vigil_active_alarms",
    "Alarms shown now (active, escalated, latched) for the patients this worker holds",
    ["priority", "kind"],
)
ASSIGNED_PARTITIONS = Gauge(
    "vigil_assigned_partitions", "Input topic-partitions assigned to this worker"
)
WORKER_READY = Gauge(
    "vigil_worker_ready", "1 when partitions are assigned, tables recovered and fetching"
)
PATIENTS_IN_MEMORY = Gauge(
    "vigil_worker_patients_in_memory",
    "Patients whose state this worker holds in memory (discharged ones leave once written)",
)
MERGE_PAUSES = Counter(
    "vigil_worker_merge_pauses_total",
    "Times the event-time merge paused reading a source's partition, far ahead of the"
    " others (while a backlog is read)",
    ["source"],
)
STATES_RETIRED = Counter(
    "vigil_patient_states_retired_total",
    "Discharged patients' states reduced to a stub 30 days (event time) after discharge",
)

WATCH_EVERY_S = 2.0
"""How often lag, alarm gauges and readiness are refreshed (in the event loop)."""
STALE_AFTER_S = 30.0
"""The event loop counts as stuck (not live) when the watch has not run for this long."""
_PRIORITIES = ("high", "medium", "low")
_KINDS = ("physiological", "technical")
_WATCHES: weakref.WeakKeyDictionary[Any, WorkerWatch] = weakref.WeakKeyDictionary()


def _internal_topic(topic: str) -> bool:
    return topic.endswith("-changelog") or "__assignor" in topic


class WorkerWatch:
    """Refreshes the worker's status gauges every ``WATCH_EVERY_S`` in its event loop.

    Reads faust's consumer (assignment, highwater, read and committed offsets) and the
    live patients' alarms; never per record. Its cached verdicts answer the probes from
    the HTTP thread: ``live()`` (the loop ran the watch recently) and ``ready()``.
    """

    def __init__(
        self,
        app: Any,
        states: Callable[[], Iterable[PatientState]],
        rules: RuleSet,
        *,
        stale_after_s: float = STALE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.states = states
        self.rules = rules
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.beat = clock()  # startup counts as a beat: grace of stale_after_s
        self.assigned = 0
        self.recovered = False
        self.fetching = False
        self._kinds: dict[str, str] = {}
        self._lag_labels: set[tuple[str, str]] = set()

    def live(self) -> bool:
        return self.clock() - self.beat <= self.stale_after_s

    def ready(self) -> bool:
        return self.live() and self.assigned > 0 and self.recovered and self.fetching

    def update(self) -> None:
        """One refresh (call it in the worker's event loop)."""
        self.beat = self.clock()
        self._update_consumer()
        self._update_alarms()
        WORKER_READY.set(1 if self.ready() else 0)

    async def run(self, interval_s: float = WATCH_EVERY_S) -> None:
        while True:
            try:
                self.update()
            except Exception:  # the watch must never stop the worker
                log.exception("worker status not refreshed")
            await asyncio.sleep(interval_s)

    def _update_consumer(self) -> None:
        app = self.app
        if not getattr(app, "started", False):  # its consumer and tables come with the start
            self.assigned, self.recovered, self.fetching = 0, False, False
            return
        recovery = app.tables.recovery
        self.recovered = recovery.completed.is_set() and not getattr(app, "in_recovery", False)
        try:
            consumer = app.consumer
            assignment = [tp for tp in consumer.assignment() if not _internal_topic(tp.topic)]
        except Exception:  # consumer not started yet
            self.assigned, self.fetching = 0, False
            return
        read = getattr(consumer, "_read_offset", {})
        committed = getattr(consumer, "_committed_offset", {})
        fetching = True
        seen: set[tuple[str, str]] = set()
        for tp in assignment:
            try:
                highwater = consumer.highwater(tp)
            except Exception:
                highwater = None
            if highwater is None:  # no fetch answered for it yet
                fetching = False
                continue
            position = read.get(tp)
            position = committed.get(tp) if position is None else position
            # Nothing read or committed yet: from the start (an upper bound under retention).
            lag = highwater if position is None else max(0, highwater - (position + 1))
            labels = (tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(*labels).set(lag)
            seen.add(labels)
        for gone in self._lag_labels - seen:  # revoked partitions leave the metric
            CONSUMER_LAG.remove(*gone)
        self._lag_labels = seen
        self.assigned = len(assignment)
        self.fetching = fetching and bool(assignment)
        ASSIGNED_PARTITIONS.set(len(assignment))

    def _kind(self, rule_id: str) -> str:
        kind = self._kinds.get(rule_id)
        if kind is None:
            try:
                kind = self.rules.get(rule_id).kind
            except KeyError:  # not in the rules file: a built-in technical alarm
                kind = "technical"
            self._kinds[rule_id] = kind
        return kind

    def _update_alarms(self) -> None:
        counts = {(p, k): 0 for p in _PRIORITIES for k in _KINDS}
        states = list(self.states())
        PATIENTS_IN_MEMORY.set(len(states))
        for state in states:
            for alarm in state.alarms:
                key = (str(alarm.priority), self._kind(alarm.rule_id))
                counts[key] = counts.get(key, 0) + 1
        for (priority, kind), count in counts.items():
            ACTIVE_ALARMS.labels(priority, kind).set(count)


def watch_worker(
    app: Any, states: Callable[[], Iterable[PatientState]], rules: RuleSet
) -> WorkerWatch:
    """Attach a :class:`WorkerWatch` to ``app`` (started by the worker shell)."""
    watch = _WATCHES[app] = WorkerWatch(app, states, rules)
    return watch


def watch_of(app: Any) -> WorkerWatch | None:
    """The watch ``create_app`` attached to ``app``, if any."""
    return _WATCHES.get(app)
