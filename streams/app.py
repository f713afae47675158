"""The faust app: one thin agent that decodes, looks up per-patient state, calls the core, emits.

Everything clinical lives in pure modules (``streams.patient`` and the feature
groups, ``streams.alarm``); this module only wires them to Kafka.

- **One agent over every co-partitioned input** (vitals, nirs, crrt, labs,
  context, alerts.ack, and risk from the risk agent): a patient's records all
  land on the same partition number, so one worker owns all of a patient's
  inputs and state.
- **Batches.** Records are taken in batches (``take_events``); each patient's
  records are applied in order, its alerts sent, and Kafka's acknowledgement of
  every alert awaited once per batch.
- **State and offsets.** ``PatientState`` lives in a changelog-backed table
  (RocksDB by default). A patient's state is written once per ``SNAPSHOT_EVERY_S``
  of its event time, at a point of that grid spread by patient (or when it raised an
  alert, or after ``SNAPSHOT_AFTER_BATCHES``), and the records it contains are
  acknowledged to faust, so their offsets can be committed, only once that snapshot
  is written. After a crash, records after the committed offset are delivered again;
  the state remembers the last offset applied per partition and skips them.
  Alert ids are deterministic, so a repeat of an alert has the same id.
- **Event-time merge and ticks.** Per partition, vitals, NIRS and CRRT records are
  merged in event time (``streams.merge``): a source with unread records is waited
  for, a caught-up silent one is not. Between records every patient of the
  partition is ticked on a 5-s grid, so "no data" alarms fire for a silent patient,
  and the alerts are the same whatever the pace each topic is read at. A written state
  remembers the grid time its partition had ticked to; a partition taken over resumes
  its ticks from the earliest of its patients', so no tick is lost or evaluated twice.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import faust
from faust.streams import _current_event
from faust.types import TP
from pydantic import ValidationError

from schemas.alerts import AlertAck
from schemas.context import ContextEvent, Discharge
from schemas.deadletter import DeadLetter
from schemas.derived import FeatureSnapshot, RiskScore
from schemas.observations import CrrtStatus, LabResults, NirsSample, ObservationMessage, VitalSigns
from schemas.topics import TopicRegistry
from streams import metrics
from streams.alarm import AlertDraft
from streams.delivery import DirectDeliveryConsumer, DirectDeliveryTransport
from streams.merge import SOURCES as MERGED_SOURCES
from streams.merge import PartitionMerge, TickSchedule
from streams.offline import partition_of
from streams.offsets import TakenOffsets
from streams.patient import RETIRE_AFTER_DISCHARGE_S, PatientState, tick_due
from streams.rules import RuleSet

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)

INPUTS: dict[str, type[ObservationMessage] | None] = {
    "vitals": VitalSigns,
    "nirs": NirsSample,
    "crrt": CrrtStatus,
    "labs": LabResults,
    "context": None,
    "alerts.ack": None,
    "risk": None,
}
SNAPSHOT_EVERY_S = 10.0
"""Write a patient's state when its event time moved this far since the last write."""
SNAPSHOT_AFTER_BATCHES = 20
"""...or when it has waited this many batches (patients whose clock stands still)."""
FLUSH_EVERY_S = 15.0
"""Wall-clock age after which the records a patient holds are written anyway (its input
went quiet). Affects only when offsets are committed, never what is computed."""
FEATURES_EVERY_S = 60.0
"""Publish a patient's features at least once a minute of event time..."""
FEATURES_MIN_EVERY_S = 10.0
"""...and on a change, at most every 10 s (rate limit)."""
BATCH_MAX = 1000
BATCH_WITHIN_S = 0.05
RECOVERY_POLL_S = 0.05  # how often a batch read before recovery checks it is complete
RECOVERY_WAIT_MAX_S = 30.0
"""A batch read before recovery waits at most this long; then it is deferred (read
again after faust's seek), so a recovery that needs the stream's buffer to drain
cannot wait on the batch forever."""
MERGE_STALL_LOG_S = 30.0
"""A merge holding a record this long (wall time) is logged with what it waits for."""
STAGE_SAMPLE_EVERY = 8
"""The stage histogram observes one record in this many (by offset): it is per record."""


def state_key(patient_id: str) -> bytes:
    """A patient's key in the state table: the id's bytes, as the inputs' Kafka key."""
    return patient_id.encode()


def write_phase_s(patient_id: str) -> float:
    """Where on the ``SNAPSHOT_EVERY_S`` grid of event time the patient's state is written.

    Spread by the id (CRC-32, so the same in every process), so that patients whose
    clocks move together (every bed after a worker start) are not all written in the
    same batch every 10 s: at 1,000 beds such a batch wrote 1,000 states at once and
    held back the records behind it.

    >>> write_phase_s("bed-7") == write_phase_s("bed-7"), 0 <= write_phase_s("x") < 10
    (True, True)
    """
    return zlib.crc32(patient_id.encode()) % 1000 / 1000 * SNAPSHOT_EVERY_S


def state_write_due(
    clock: float | None,
    saved_clock: float | None,
    dirty_batches: int,
    *,
    phase_s: float = 0.0,
    alerted: bool = False,
    force: bool = False,
) -> bool:
    """Whether a patient's state is written after a batch that touched it.

    Written when forced (input quiet), when it alerted (the state remembers the alert),
    when never written, when its event time passed a point ``phase_s`` of the
    ``SNAPSHOT_EVERY_S`` grid since the last write (``write_phase_s``; so at most
    ``SNAPSHOT_EVERY_S`` apart), or after ``SNAPSHOT_AFTER_BATCHES`` batches (a clock
    standing still).

    >>> state_write_due(105.0, 100.0, 1), state_write_due(110.0, 100.0, 1)
    (False, True)
    >>> state_write_due(103.0, 100.0, 1, phase_s=2.5), state_write_due(103.0, 103.0, 1)
    (True, False)
    >>> state_write_due(100.0, 100.0, SNAPSHOT_AFTER_BATCHES), state_write_due(1.0, None, 1)
    (True, True)
    """
    moved = (
        clock is not None
        and saved_clock is not None
        and (clock - phase_s) // SNAPSHOT_EVERY_S > (saved_clock - phase_s) // SNAPSHOT_EVERY_S
    )
    return (
        force or alerted or moved or saved_clock is None or dirty_batches >= SNAPSHOT_AFTER_BATCHES
    )


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to know; built from ``services.config.Settings``."""

    app_id: str
    bootstrap_servers: str
    store: str
    datadir: Path
    topics: TopicRegistry
    rules: RuleSet
    merge_queue_max: int = 5000  # records a source may queue per partition (``regulate``)


@dataclass
class _Live:
    """A patient's state in memory, the records it holds un-acknowledged, and when saved."""

    state: PatientState
    partition: int
    held: list[Any] = field(default_factory=list)
    saved_clock: float | None = None
    dirty_batches: int = 0
    anchor: Any = None  # the patient's latest record: names its partition to the store
    dirty_since: float | None = None  # monotonic time of the first record held


class _WorkerApp(faust.App):
    """faust's app with the consumer of ``streams.delivery`` (same semantics, less CPU)."""

    def _new_transport(self) -> Any:
        return DirectDeliveryTransport(self.conf.broker_consumer, self)


def create_app(config: WorkerConfig, clock: Clock = _wall_clock) -> faust.App:
    """Build the faust app with its topics, table and agent."""
    topics = config.topics
    app = _WorkerApp(
        config.app_id,
        broker=[f"kafka://{server}" for server in config.bootstrap_servers.split(",")],
        store=config.store,
        datadir=str(config.datadir),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=topics.partitions,
        topic_replication_factor=topics.replication_factor,
        producer_acks=-1,
        # Batch produce requests (changelog, alerts, features).
        producer_linger=0.02,
        producer_max_batch_size=256 * 1024,
        # A dead worker's patients move to another within ~10 s, not faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        consumer_auto_offset_reset="earliest",
        # Records are acknowledged only once the patient state holding them is written;
        # a rebalance must not wait for that (the new owner re-reads and skips them).
        stream_wait_empty=False,
    )

    def raw_topic(*base_names: str) -> Any:
        return app.topic(
            *(topics.name(name) for name in base_names),
            key_serializer="raw",
            value_serializer="raw",
            partitions=topics.partitions_of(base_names[0]),
        )

    source_of = {topics.name(name): name for name in INPUTS}
    # the counter's child per topic, looked up once (``labels()`` per record costs ~3 %)
    samples_in = {topic: metrics.SAMPLES_IN.labels(name) for topic, name in source_of.items()}
    vitals_topic = topics.name("vitals")
    inputs = raw_topic(*INPUTS)
    alerts_topic, features_topic = raw_topic("alerts"), raw_topic("features")
    deadletter_topic = raw_topic("deadletter")
    table = app.Table(
        "patient-state",
        default=None,
        partitions=topics.partitions,
        # Keyed by the patient id's bytes, as the inputs are: with ``use_partitioner`` the
        # changelog partition is murmur2 of the key bytes, so a patient's state lands on its
        # input partition and a worker recovers the states of the partitions it is given.
        # (faust serializes a ``str`` key as JSON, quotes included: another partition.)
        key_type=bytes,
        schema=faust.Schema(key_type=bytes, key_serializer="raw", value_serializer="json"),
        use_partitioner=True,
        help="PatientState by patient id (key: its UTF-8 bytes; value: JSON; changelog-backed)",
    )

    live: dict[str, _Live] = {}
    merges: dict[int, PartitionMerge] = {}  # partition -> event-time merge of its sources
    schedules: dict[int, TickSchedule] = {}  # partition -> patients by "no data" due time
    resume: dict[int, float] = {}  # partition -> grid time its ticks resume after (reloaded)
    # partition -> heap of (event time, patient id): discharged states to retire then
    retiring: dict[int, list[tuple[float, str]]] = {}
    paused: dict[int, set[str]] = {}  # partition -> sources whose reading the merge paused
    # lag, alarms shown, readiness: refreshed every few seconds (services.worker starts it)
    metrics.watch_worker(app, lambda: [entry.state for entry in live.values()], config.rules)

    taken = TakenOffsets()  # offsets taken per topic-partition in this assignment
    rebalanced = False  # set on (re)assignment: re-watch the stored patients
    ready_generation: int | None = None  # consumer generation whose recovery completed
    manager: Any = app.tables  # faust's TableManager (its type stub lacks the hook)
    tables_on_actives_ready = manager.on_actives_ready

    def _on_actives_ready() -> None:
        # faust can finish a recovery after the next rebalance began (it re-checks the
        # generation only before its last awaits): remember which generation it was for
        nonlocal ready_generation
        ready_generation = app.consumer_generation_id
        tables_on_actives_ready()

    manager.on_actives_ready = _on_actives_ready

    def _clear_changelog_queue_only() -> None:
        # faust clears every flow-controlled queue when a rebalance begins and whenever
        # the flow resumes, recovery's last resume included: that one comes after its
        # seek to the committed offsets, so records delivered in between were dropped
        # from the agent's queue and never read again (the partition stalled). The
        # agent's queues are kept: a record of a previous assignment is deferred by
        # ``current`` (read again after the next seek), one of this assignment is
        # applied once, its second reading skipped (``TakenOffsets``). The table's
        # changelog queue is still cleared, as faust does.
        queue = manager._changelog_queue
        if queue is not None:
            queue.clear()

    app.flow_control.clear = _clear_changelog_queue_only  # type: ignore[method-assign]

    def recovered() -> bool:
        """Whether the current assignment's partitions' states are recovered."""
        return bool(app.tables.actives_ready) and ready_generation == app.consumer_generation_id

    epoch = 0  # one more on every revoke and assignment (see ``current``)

    async def _drop_live(_sender: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        # A partition may have moved: forget held records (the next owner re-reads them
        # from the committed offset, and so does this worker: faust seeks every assigned
        # partition back to it), and how far each topic was read.
        nonlocal epoch, rebalanced
        epoch += 1
        live.clear()
        merges.clear()
        schedules.clear()
        resume.clear()
        retiring.clear()
        paused.clear()  # faust pauses, then resumes, every assigned partition itself
        taken.clear()
        rebalanced = True

    def current(event: Any, since: int) -> bool:
        """Whether a record may be applied, in a batch begun at ``epoch`` ``since``.

        Not when a rebalance began since: faust's batch buffer still hands over records
        of the previous assignment (read past the committed offset, so applying one would
        make the records before it look already applied). Such a record is never
        acknowledged: the assignment that follows reads it again from the committed
        offset. (A record of the current assignment read before its states are recovered
        waits for them instead: ``await_recovery``.)
        """
        return (
            since == epoch
            and recovered()
            and event.message.generation_id == app.consumer_generation_id
        )

    async def await_recovery(batch: list[Any], since: int) -> None:
        """Hold a batch read before the assigned partitions' states are recovered.

        A new assignment reads each partition from its committed offset, and faust's
        recovery reads it again from there once the changelogs are replayed: records read
        in between (before ``actives_ready``) are applied once recovery is complete, and
        their second reading is skipped (``TakenOffsets.already_taken``). Deferring them
        to the second reading instead would lose those read between faust's seek and
        ``actives_ready``: nothing reads them a third time, and the partition's
        committed offset would stall below them. After ``RECOVERY_WAIT_MAX_S`` the batch is
        deferred after all (``current`` is still false): faust has not sought yet, or
        it would be complete, so the seek reads it again.
        """
        began = time.monotonic()
        while (
            not recovered()
            and since == epoch
            and any(e.message.generation_id == app.consumer_generation_id for e in batch)
        ):
            if time.monotonic() - began > RECOVERY_WAIT_MAX_S:
                log.warning(
                    "recovery not complete after %.0f s: a batch of %d records is deferred",
                    RECOVERY_WAIT_MAX_S,
                    len(batch),
                )
                return
            await asyncio.sleep(RECOVERY_POLL_S)
        if time.monotonic() > began + RECOVERY_POLL_S / 2:
            log.info(
                "a batch of %d records read before recovery waited %.2f s for it",
                len(batch),
                time.monotonic() - began,
            )

    def take(message: Any) -> None:
        """Remember the record's offset as taken in this assignment (``TakenOffsets``)."""
        if not taken.take((message.topic, message.partition), message.offset):
            # frequent values among the late records are late for their patient: dropped
            # and counted as such (``vigil_samples_late_total``)
            log.error(
                "%s[%d]@%d arrived after later offsets of the same assignment",
                message.topic,
                message.partition,
                message.offset,
            )

    def schedule_of(partition: int) -> TickSchedule:
        """The partition's "no data" tick schedule, created on first use."""
        schedule = schedules.get(partition)
        if schedule is None:
            schedule = schedules[partition] = TickSchedule()
        return schedule

    def watch_stored_patients() -> None:
        """After a rebalance, every stored patient of the assigned partitions is watched
        again, so one whose devices went silent before it still gets its "no data"
        alarms (records bring the others back anyway); and each partition's ticks resume
        after the earliest grid time its patients' written states have been through
        (``PatientState.resume_tick``), not at the first record re-read: a tick between
        a state's writing and that record would be lost."""
        for key, stored in table.items():
            if not stored or key.startswith(b'"'):  # a JSON key: see ``stored_state``
                continue
            patient_id = key.decode()
            if patient_id in live:
                continue
            partition = partition_of(patient_id, topics.partitions)
            discharged_at = stored.get("discharged")
            if discharged_at is not None:  # not watched; retired in time (``retire_due``)
                if not stored.get("retired"):
                    expect_retirement(partition, patient_id, discharged_at)
                continue
            state = PatientState.from_state(stored)
            if state.clock is None:
                continue
            live[patient_id] = _Live(state, partition, saved_clock=state.clock)
            schedule_of(partition).schedule(patient_id, state.clock)
            mark = state.resume_tick()
            if mark is not None:
                resume[partition] = min(resume.get(partition, mark), mark)

    app.on_partitions_revoked.connect(_drop_live)
    app.on_partitions_assigned.connect(_drop_live)

    async def dead_letter(event: Any, source: str, reason: str, detail: str) -> None:
        message = event.message
        key = event.key
        letter = DeadLetter.of(
            bytes(event.value or b""),
            source=f"worker.{source}",
            reason=reason,
            detail=detail[:4000],
            original_topic=message.topic,
            original_partition=message.partition,
            original_offset=message.offset,
            original_key=key.decode("utf-8", "replace") if isinstance(key, bytes) else None,
            received_at=clock(),
        )
        delivery = await deadletter_topic.send(
            key=f"worker.{source}".encode(), value=letter.model_dump_json().encode()
        )
        await delivery  # the record counts as handled only once its dead letter is stored
        metrics.DEAD_LETTERS.labels(source, reason).inc()

    def stored_state(patient_id: str) -> Any:
        """The patient's written state (None: none). Before states were keyed by the id's
        bytes they were keyed by its JSON (``"sim-001"``, quotes included) on another
        changelog partition: such a state is read when this worker holds it and no
        newer one exists (always with one worker; with several, only where the old
        partition's changelog was recovered to this worker)."""
        stored = table.get(state_key(patient_id))
        if stored is None:
            stored = table.get(json.dumps(patient_id).encode())
        return stored

    def patient_of(patient_id: str, partition: int) -> _Live:
        entry = live.get(patient_id)
        if entry is None:
            stored = stored_state(patient_id)
            state = PatientState.from_state(stored) if stored else PatientState(patient_id)
            entry = live[patient_id] = _Live(state, partition, saved_clock=state.clock)
        return entry

    def expect_retirement(partition: int, patient_id: str, discharged_at: float) -> None:
        heapq.heappush(
            retiring.setdefault(partition, []),
            (discharged_at + RETIRE_AFTER_DISCHARGE_S, patient_id),
        )

    def retire_due(partition: int, at: float, anchor: Any) -> None:
        """Write the stub of each discharged patient of ``partition`` whose retirement
        time (``PatientState.retire_if_due``) is at or before ``at``, the event time of
        ``anchor``, a record of the partition about to be applied.

        In event-time order, exactly where a record of the patient itself would retire
        it first (``apply_decoded``), so the table's content does not depend on which
        comes first. The compacted changelog then keeps the stub only.
        """
        heap = retiring.get(partition)
        while heap and heap[0][0] <= at:
            _due, patient_id = heapq.heappop(heap)
            if patient_id in live:  # back, or not written since: its own records decide
                continue
            try:
                stored = table.get(state_key(patient_id))
                if not stored or stored.get("retired"):
                    continue
                state = PatientState.from_state(stored)
                if not state.retire_if_due(at):
                    continue
                _current_event.set(weakref.ref(anchor))  # files the key under this partition
                table[state_key(patient_id)] = state.to_state()
            except Exception:  # kept at full size; retired again after the next assignment
                log.exception("a discharged patient's state was not retired")
                continue
            metrics.STATES_RETIRED.inc()

    def state_of(patient_id: str) -> PatientState | None:
        entry = live.get(patient_id)
        return entry.state if entry is not None else None

    def decode(event: Any, source: str) -> Any:
        """The record's payload; raises on bad input or a key that is not its patient id."""
        raw = event.value or b""
        model = INPUTS[source]
        if source == "context":
            payload: Any = ContextEvent.model_validate_json(raw).root
        elif source == "alerts.ack":
            payload = AlertAck.model_validate_json(raw)
        elif source == "risk":
            payload = RiskScore.model_validate_json(raw)
        else:
            assert model is not None
            payload = model.model_validate_json(raw)
        if event.key != payload.patient_id.encode():
            raise KeyMismatchError("Kafka key must be the patient id")
        return payload

    def apply_decoded(
        event: Any, source: str, payload: Any, at: float | None = None
    ) -> tuple[_Live, list[AlertDraft]]:
        """Apply one decoded record to its patient; (patient entry, alert drafts).

        ``at``: the record's event time, for a merged source (a patient's own record
        retires its state when due, ``PatientState.retire_if_due``).
        """
        entry = patient_of(payload.patient_id, event.message.partition)
        state = entry.state
        position = f"{event.message.topic}:{event.message.partition}"
        if state.seen(position, event.message.offset):
            return entry, []  # re-delivered after a restart: already in the state
        if at is not None and state.retire_if_due(at):
            metrics.STATES_RETIRED.inc()
        late_before = state.late_samples
        if source not in ("risk", "alerts.ack"):
            # the features of the patient's clock, before this record moves it on
            closing = state.snapshot_closing(
                None if isinstance(payload, Discharge) else payload.observed_at.timestamp(),
                FEATURES_EVERY_S,
                FEATURES_MIN_EVERY_S,
            )
            if closing is not None:
                snapshots.append(closing)
        if source == "context":
            drafts = state.apply_context(payload, config.rules)
        elif source == "alerts.ack":
            drafts = state.acknowledge(payload, config.rules)
        elif source == "risk":
            drafts = state.apply_risk(payload, config.rules)
        else:
            drafts = state.apply_observations(source, payload, config.rules)
        state.remember(position, event.message.offset)
        if state.clock is not None:  # re-checked on the next tick (``tick_due``)
            schedule_of(entry.partition).schedule(state.patient_id, state.clock)
        if state.late_samples != late_before:
            metrics.SAMPLES_LATE.labels(source).inc(state.late_samples - late_before)
        return entry, drafts

    async def publish_alerts(drafts: list[AlertDraft], taken_at: float) -> None:
        """Send the batch's alert events and await Kafka's acknowledgement of each
        (``taken_at``: the batch's wall time, for the stage histogram)."""
        deliveries = []
        for draft in drafts:
            alert = draft.to_event(raised_at=clock())
            deliveries.append(
                (
                    alert,
                    await alerts_topic.send(
                        key=alert.patient_id.encode(), value=alert.model_dump_json().encode()
                    ),
                )
            )
        for alert, delivery in deliveries:
            await delivery
            metrics.ALERT_EVENTS.labels(alert.rule_id, alert.phase, alert.priority).inc()
            if alert.trigger_received_at is not None:
                latency = (clock() - alert.trigger_received_at).total_seconds()
                metrics.EVENT_TO_ALERT_LATENCY.observe(max(0.0, latency))
            to_ack.observe(max(0.0, time.time() - taken_at))

    snapshots: list[FeatureSnapshot] = []  # taken in this batch (``snapshot_closing``)

    async def publish_features() -> None:
        taken = snapshots[:]
        snapshots.clear()
        for snapshot in taken:
            await features_topic.send(
                key=snapshot.patient_id.encode(), value=snapshot.model_dump_json().encode()
            )
            metrics.FEATURE_SNAPSHOTS.inc()

    def caught_up(partition: int) -> Callable[[str], bool]:
        """Whether a frequent source of ``partition`` has no record left to read."""

        def check(source: str) -> bool:
            topic = topics.name(source)
            tp = TP(topic, partition)
            try:
                highwater = app.consumer.highwater(tp)
            except Exception:  # no fetch yet: unknown, so wait for it
                return False
            if highwater is None:
                return False
            last = taken.last((topic, partition))
            if last is None:  # nothing read since the assignment: faust sought it to the
                # committed offset, and a source with nothing after it must not be waited
                # for (its next record may be a minute away, or never come)
                committed = getattr(app.consumer, "_committed_offset", {}).get(tp)
                return (committed or 0) >= highwater
            return last + 1 >= highwater

        return check

    def release(
        partition: int, touched: dict[str, _Live], failed: list[tuple[Any, str, Exception]]
    ) -> list[AlertDraft]:
        """Apply what the partition's merge lets go, in event time, with its ticks."""
        drafts: list[AlertDraft] = []
        merge = merges.get(partition)
        if merge is None:
            return drafts
        now = time.time()
        for kind, at, item in merge.release(caught_up(partition)):
            if kind == "tick":
                schedule = schedules.get(partition)
                if schedule is None:
                    continue
                for patient_id, found in tick_due(schedule, state_of, at, config.rules):
                    if found:
                        drafts += found
                        touched[patient_id] = live[patient_id]
                continue
            event, message, taken_at = item
            if not event.message.offset % STAGE_SAMPLE_EVERY:
                merge_wait.observe(max(0.0, now - taken_at))
            due = retiring.get(partition)
            if due and due[0][0] <= at:
                retire_due(partition, at, event)
            try:
                entry, found = apply_decoded(event, kind, message, at)
            except Exception as exc:  # one bad record must never stop the unit's monitoring
                failed.append((event, kind, exc))
                continue
            hold(event, entry, touched, merged=True)
            drafts += found
        return drafts

    def regulate(partition: int) -> None:
        """Pause reading a source of ``partition`` that is far ahead of the others in
        the merge, resume it once the merge has caught up (``PartitionMerge.flow``):
        memory stays bounded while a backlog is read, and the alerts are the same."""
        sources = paused.setdefault(partition, set())
        pause, resume = merges[partition].flow(sources, config.merge_queue_max)
        consumer = cast(DirectDeliveryConsumer, app.consumer)
        if pause:
            consumer.pause_fetching({TP(topics.name(s), partition) for s in pause})
            sources |= pause
            for source in pause:
                metrics.MERGE_PAUSES.labels(source).inc()
        if resume:
            consumer.resume_partitions({TP(topics.name(s), partition) for s in resume})
            sources -= resume

    def hold(event: Any, entry: _Live, touched: dict[str, _Live], *, merged: bool = False) -> None:
        """Keep the record un-acknowledged until the state that contains it is written.

        ``merged``: the record already holds a reference from the merge queue, which
        passes to the patient.
        """
        if not merged:
            event.message.incref()
        entry.held.append(event)
        entry.anchor = event
        if entry.dirty_since is None:
            entry.dirty_since = time.monotonic()
        touched[entry.state.patient_id] = entry
        busy.add(entry.state.patient_id)

    def save(entries: dict[str, _Live], alerted: set[str], force: bool = False) -> None:
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == vitals_topic}
        for patient_id, entry in entries.items():
            if entry.partition not in owned:
                continue  # revoked while this batch ran: the new owner re-reads its records
            state = entry.state
            entry.dirty_batches += 1
            if not state_write_due(
                state.clock,
                entry.saved_clock,
                entry.dirty_batches,
                phase_s=write_phase_s(patient_id),
                alerted=patient_id in alerted,
                force=force,
            ):
                continue
            # faust's RocksDB store files the key under the *current event's* partition;
            # inside a batch that is whichever record came last, so name this patient's
            # (its latest record, kept alive by the entry: the store holds a weak ref).
            if entry.anchor is None:
                continue  # nothing of this patient read by this process: nothing to write
            merge = merges.get(entry.partition)
            if merge is not None and merge.ticked is not None:
                state.passed_tick(merge.ticked)  # every tick so far: none again after a reload
            _current_event.set(weakref.ref(entry.anchor))
            try:
                table[state_key(patient_id)] = state.to_state()
            except Exception:  # keep its records un-acknowledged: they are read again
                log.exception("state of one patient not written; its records stay pending")
                continue
            entry.saved_clock, entry.dirty_batches, entry.dirty_since = state.clock, 0, None
            held, entry.held = entry.held, []
            for held_event in held:
                held_event.ack()
            if state.discharged_at is not None and live.get(patient_id) is entry:
                # written: memory stays bounded by the beds, not by every patient ever
                # seen; a later record of the patient reloads the state (``patient_of``)
                del live[patient_id]
                if not state.retired:  # and the table by those of the last 30 days
                    expect_retirement(entry.partition, patient_id, state.discharged_at)

    to_worker = metrics.WORKER_STAGE_LATENCY.labels("to_worker")
    merge_wait = metrics.WORKER_STAGE_LATENCY.labels("merge_wait")
    to_ack = metrics.WORKER_STAGE_LATENCY.labels("batch_to_ack")
    busy: set[str] = set()  # patients of the batch in progress (alerts not yet acknowledged)

    @app.timer(interval=FLUSH_EVERY_S)  # type: ignore[untyped-decorator]
    async def flush_idle() -> None:
        """Write the state of patients whose records have waited ``FLUSH_EVERY_S`` or more.

        Patients with a steady stream are written by the agent every 10 s of their
        event time; this catches those whose input went quiet, so their offsets move.
        """
        now = time.monotonic()
        waiting = {
            p: e
            for p, e in live.items()
            if e.held
            and p not in busy
            and e.dirty_since is not None
            and now - e.dirty_since >= FLUSH_EVERY_S
        }
        if waiting and recovered():
            save(waiting, set(), force=True)
        report_stalled_merges()

    def report_stalled_merges() -> None:
        """Log a partition whose merge has held a record for ``MERGE_STALL_LOG_S`` of
        wall time, with the sources it waits for (unread records, none queued)."""
        now = time.time()
        for partition, merge in merges.items():
            heads = [queue[0] for queue in merge.queues.values() if queue]
            if not heads:
                continue
            oldest = min(item[2] for _at, _seq, item in heads)  # the batch's taken_at
            if now - oldest < MERGE_STALL_LOG_S:
                continue
            check = caught_up(partition)
            waiting = [s for s, q in merge.queues.items() if not q and not check(s)]
            log.warning(
                "the merge of partition %d has held %d records for %.0f s; waiting for %s",
                partition,
                len(merge),
                now - oldest,
                ", ".join(waiting) or "nothing (released with the next batch)",
            )

    @app.agent(inputs, name="patients")
    async def process(stream: Any) -> None:
        nonlocal rebalanced
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            since = epoch
            await await_recovery(batch, since)
            taken_at = time.time()
            if rebalanced and any(current(event, since) for event in batch):
                rebalanced = False  # the assigned partitions' states are recovered
                watch_stored_patients()
            touched: dict[str, _Live] = {}
            drafts: list[AlertDraft] = []
            busy.clear()
            partitions: set[int] = set()
            deferred = reread = 0
            lettered: list[Any] = []  # dead-lettered: acknowledged below, in this assignment
            for event in batch:
                message = event.message
                if not current(event, since):  # (a rebalance may begin at any await below)
                    message.incref()  # never acknowledged: read again from the committed offset
                    metrics.RECORDS_DEFERRED.inc()
                    deferred += 1
                    continue
                if taken.already_taken((message.topic, message.partition), message.offset):
                    # Never acknowledged here: the first reading's acknowledgement counts,
                    # and it may still be queued in the merge (un-acknowledged on purpose).
                    message.incref()
                    metrics.RECORDS_REREAD.inc()
                    reread += 1
                    continue
                source = source_of.get(message.topic, "unknown")
                take(message)
                counter = samples_in.get(message.topic)
                (counter or metrics.SAMPLES_IN.labels(source)).inc()
                try:
                    payload = decode(event, source)
                    if source in MERGED_SOURCES:  # merged in event time, applied below
                        merge = merges.get(message.partition)
                        if merge is None:
                            merge = merges[message.partition] = PartitionMerge(
                                resume.get(message.partition)
                            )
                        # un-acknowledged while queued: a crash then re-reads it, not loses it
                        message.incref()
                        merge.add(
                            source, payload.observed_at.timestamp(), (event, payload, taken_at)
                        )
                        if source == "vitals" and not message.offset % STAGE_SAMPLE_EVERY:
                            to_worker.observe(max(0.0, taken_at - payload.received_at.timestamp()))
                        partitions.add(message.partition)
                        continue
                    entry, found = apply_decoded(event, source, payload)
                except (ValidationError, ValueError, KeyMismatchError) as exc:
                    reason = (
                        "key_mismatch" if isinstance(exc, KeyMismatchError) else f"invalid_{source}"
                    )
                    await dead_letter(event, source, reason, str(exc))
                    message.incref()
                    lettered.append(event)
                    continue
                except Exception as exc:  # one bad record must never stop the unit's monitoring
                    log.exception(
                        "%s record %s[%d]@%d failed; dead-lettered",
                        source,
                        message.topic,
                        message.partition,
                        message.offset,
                    )
                    await dead_letter(event, source, "processing_error", repr(exc))
                    message.incref()
                    lettered.append(event)
                    continue
                hold(event, entry, touched)
                drafts += found
            if deferred or reread:
                log.info(
                    "rebalance: %d records of a previous assignment deferred, %d already"
                    " applied read again (skipped)",
                    deferred,
                    reread,
                )
            failed: list[tuple[Any, str, Exception]] = []
            for partition in sorted(merges):
                drafts += release(partition, touched, failed)
                if since == epoch:
                    regulate(partition)
            for bad_event, bad_source, error in failed:
                # the error's text (which may name the patient) goes to the dead letter only
                log.error("%s record failed (%s); dead-lettered", bad_source, type(error).__name__)
                await dead_letter(bad_event, bad_source, "processing_error", repr(error))
                lettered.append(bad_event)  # with the merge queue's reference
            # Alerts first, acknowledged by Kafka, then the state that remembers them: a
            # crash in between re-emits the alert (same event id) instead of losing it.
            await publish_alerts(drafts, taken_at)
            await publish_features()
            if since == epoch:  # else its partitions were revoked: they are read again
                save(touched, {d.context.patient_id for d in drafts})
                for letter in lettered:
                    letter.ack()
            busy.clear()
            await asyncio.sleep(0)

    return app


class KeyMismatchError(ValueError):
    """The record's Kafka key is not its patient id (co-partitioning would break)."""
