"""A partition taken over after a rebalance or restart, without Kafka: the patient states
as last written plus the records re-read from the committed offsets give the alert
events of an uninterrupted run (``streams.offline``), whatever the point it stops at.

``_Worker`` is ``streams.app``'s agent with the broker and faust taken out: records of
each topic-partition are read at a pace of their own (so the event-time merge waits on
a topic read behind), frequent sources merged and ticked per partition, a patient's
state written every ``SNAPSHOT_EVERY_S`` of its event time (or when it alerted), its
records acknowledged only then, and the committed offset of a topic-partition the first
record not acknowledged. A restart keeps only the written states (JSON, as the table's
changelog) and re-reads from the committed offsets.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka.partitioner.default import murmur2
from pydantic import BaseModel

import services.sim.bed as bed_module
from schemas.context import ContextEvent
from schemas.topics import TopicRegistry
from services.sim.bed import SimulatedBed
from services.sim.scenarios import Equipment, Scenario, equipment_of
from streams.alarm import AlertDraft
from streams.app import (
    WorkerConfig,
    create_app,
    state_key,
    state_write_due,
    write_phase_s,
)
from streams.merge import TICK_EVERY_S, PartitionMerge, TickSchedule
from streams.offline import OfflinePipeline, partition_of
from streams.patient import FREQUENT_SOURCES, PatientState, tick_due
from streams.rules import RuleSet, load_rules

PARTITIONS = 4
SEED = 11
START = datetime(2026, 1, 1, tzinfo=UTC)
PLAN = (
    Scenario("cerebral_desaturation", 1, 6, 600, 1.5, side="left"),
    Scenario("device_disconnect", 3, 8, 75, device="monitor"),
    Scenario("cerebral_desaturation", 6, 11, 600, 1.5, side="right"),
    Scenario("crrt_filter_clotting", 7, 0, 90, 3.0),
    Scenario("device_disconnect", 9, 14, 75, device="nirs"),
)
"""As bench/worker.py's load: a silent monitor and NIRS sensor ("no data" alarms start
and end), cerebral desaturation (rSO2 below the device's baseline), a clotting filter."""
PACE = {"vitals": 7, "nirs": 5, "crrt": 1, "labs": 2, "context": 2}
"""Records taken per batch from each topic-partition: vitals read ahead of NIRS."""

Record = tuple[str, int, int, BaseModel]  # topic, partition, offset, payload
TP = tuple[str, int]


@contextmanager
def _device_periods(nirs_every_s: int, crrt_every_s: int) -> Iterator[None]:
    saved = bed_module.NIRS_EVERY_S, bed_module.CRRT_EVERY_S
    bed_module.NIRS_EVERY_S, bed_module.CRRT_EVERY_S = nirs_every_s, crrt_every_s
    try:
        yield
    finally:
        bed_module.NIRS_EVERY_S, bed_module.CRRT_EVERY_S = saved


def _load(beds: int, seconds: int) -> list[tuple[str, BaseModel]]:
    """(topic, payload) in the order published: 1 Hz vitals and NIRS, CRRT every 10 s."""
    with _device_periods(1, 10):
        simulated = []
        for bed in range(1, beds + 1):
            own = tuple(s for s in PLAN if s.bed == bed)
            drawn = equipment_of(SEED, bed, own)
            equipment = Equipment(drawn.arterial_line, drawn.central_line, nirs=True, crrt=True)
            simulated.append(SimulatedBed(SEED, bed, "ICU1", own, equipment))
        records = []
        for t in range(seconds):
            at = START + timedelta(seconds=t)
            for bed in simulated:
                records += [(r.topic, r.payload) for r in bed.step(t, at, at)]
    return records


@dataclass
class _Entry:
    state: PatientState
    partition: int
    held: list[Record] = field(default_factory=list)
    saved_clock: float | None = None
    dirty_batches: int = 0
    read: bool = False  # a record of it was read by this worker (the app's ``anchor``)


class _Worker:
    """The agent of ``streams.app`` on in-memory topic-partitions (see the module doc)."""

    def __init__(
        self,
        log: dict[TP, list[BaseModel]],
        table: dict[str, str],
        start: dict[TP, int],
        rules: RuleSet,
        pace: dict[str, int],
    ) -> None:
        self.log, self.table, self.rules, self.pace = log, table, rules, pace
        self.start = dict(start)
        self.position = dict(start)
        self.acked: dict[TP, set[int]] = defaultdict(set)
        self.live: dict[str, _Entry] = {}
        self.merges: dict[int, PartitionMerge] = {}
        self.schedules: dict[int, TickSchedule] = {}
        self.consumed: dict[TP, int] = {}
        self.resume: dict[int, float] = {}
        self.drafts: list[AlertDraft] = []
        self._watch_stored_patients()

    def _schedule(self, partition: int) -> TickSchedule:
        return self.schedules.setdefault(partition, TickSchedule())

    def _watch_stored_patients(self) -> None:
        for patient_id, text in self.table.items():
            state = PatientState.from_state(json.loads(text))
            if state.clock is None or state.discharged_at is not None:
                continue
            partition = partition_of(patient_id, PARTITIONS)
            self.live[patient_id] = _Entry(state, partition, saved_clock=state.clock)
            self._schedule(partition).schedule(patient_id, state.clock)
            mark = state.resume_tick()
            if mark is not None:
                self.resume[partition] = min(self.resume.get(partition, mark), mark)

    def _entry(self, patient_id: str, partition: int) -> _Entry:
        entry = self.live.get(patient_id)
        if entry is None:
            text = self.table.get(patient_id)
            state = PatientState.from_state(json.loads(text)) if text else PatientState(patient_id)
            entry = self.live[patient_id] = _Entry(state, partition, saved_clock=state.clock)
        return entry

    def _apply(self, record: Record, touched: dict[str, _Entry]) -> list[AlertDraft]:
        topic, partition, offset, payload = record
        entry = self._entry(str(getattr(payload, "patient_id")), partition)  # noqa: B009
        state = entry.state
        entry.held.append(record)
        entry.read = True
        touched[state.patient_id] = entry
        position = f"{topic}:{partition}"
        if state.seen(position, offset):
            return []
        if topic == "context":
            context = payload.root if isinstance(payload, ContextEvent) else payload
            drafts = state.apply_context(context, self.rules)  # type: ignore[arg-type]
        else:
            drafts = state.apply_observations(topic, payload, self.rules)  # type: ignore[arg-type]
        state.remember(position, offset)
        if state.clock is not None:
            self._schedule(partition).schedule(state.patient_id, state.clock)
        return drafts

    def _caught_up(self, partition: int, source: str) -> bool:
        """No record left to read: after the last one taken, or (none taken by this
        worker) from the committed offset it started at."""
        tp = (source, partition)
        taken = self.consumed.get(tp)
        position = self.start.get(tp, 0) if taken is None else taken + 1
        return position >= len(self.log.get(tp, ()))

    def batch(self) -> bool:
        """One batch; False when every topic-partition was read to its end."""
        taken: list[Record] = []
        for tp in sorted(self.log):
            first = self.position[tp]
            payloads = self.log[tp][first : first + self.pace[tp[0]]]
            taken += [(tp[0], tp[1], first + i, p) for i, p in enumerate(payloads)]
            self.position[tp] = first + len(payloads)
        if not taken:
            return False
        touched: dict[str, _Entry] = {}
        drafts: list[AlertDraft] = []
        for record in taken:
            topic, partition, offset, payload = record
            self.consumed[(topic, partition)] = offset
            if topic in FREQUENT_SOURCES:
                merge = self.merges.get(partition)
                if merge is None:
                    merge = self.merges[partition] = PartitionMerge(self.resume.get(partition))
                merge.add(topic, getattr(payload, "observed_at").timestamp(), record)  # noqa: B009
                continue
            drafts += self._apply(record, touched)
        for partition in sorted(self.merges):
            for kind, at, item in self.merges[partition].release(
                lambda source, p=partition: self._caught_up(p, source)
            ):
                if kind != "tick":
                    drafts += self._apply(item, touched)
                    continue
                state_of = lambda p: self.live[p].state if p in self.live else None  # noqa: E731
                for patient_id, found in tick_due(
                    self._schedule(partition), state_of, at, self.rules
                ):
                    if found:
                        drafts += found
                        touched[patient_id] = self.live[patient_id]
        self.drafts += drafts
        self._save(touched, {d.context.patient_id for d in drafts})
        return True

    def flush(self) -> None:
        """Write every patient holding records (the app's ``flush_idle``, input quiet)."""
        self._save({p: e for p, e in self.live.items() if e.held}, set(), force=True)

    def _save(self, touched: dict[str, _Entry], alerted: set[str], force: bool = False) -> None:
        for patient_id, entry in touched.items():
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
            if not entry.read:
                continue
            merge = self.merges.get(entry.partition)
            if merge is not None and merge.ticked is not None:
                state.passed_tick(merge.ticked)
            self.table[patient_id] = json.dumps(state.to_state())
            entry.saved_clock, entry.dirty_batches = state.clock, 0
            for topic, partition, offset, _payload in entry.held:
                self.acked[(topic, partition)].add(offset)
            entry.held = []

    def committed(self) -> dict[TP, int]:
        """Per topic-partition, the first offset not acknowledged (what Kafka keeps)."""
        found = {}
        for tp, first in self.start.items():
            offset = first
            while offset in self.acked[tp]:
                offset += 1
            found[tp] = offset
        return found


def _event(draft: AlertDraft) -> dict[str, Any]:
    return draft.to_event(raised_at=START).model_dump(exclude={"trigger_received_at"})


def _run(
    log: dict[TP, list[BaseModel]],
    rules: RuleSet,
    stops: list[int] | None = None,
    pace: dict[str, int] | None = None,
) -> list[AlertDraft]:
    """Drain ``log``; after ``stops[i]`` batches the worker is replaced by a new one (None:
    after every batch that leaves a tick due: records released at a grid time, not its
    tick, which comes before the next record). Every record is applied and committed in
    the end (none left waiting in a merge)."""
    table: dict[str, str] = {}
    worker = _Worker(log, table, dict.fromkeys(log, 0), rules, pace or PACE)
    drafts: list[AlertDraft] = []
    if stops is None:
        done: set[tuple[int, float]] = set()  # once per partition and grid time
        while worker.batch():
            due = {
                (partition, m.released_at)
                for partition, m in worker.merges.items()
                if m.released_at is not None
                and m.released_at % TICK_EVERY_S == 0
                and (m.ticked is None or m.ticked < m.released_at)
            }
            if due - done:
                done |= due
                drafts += worker.drafts
                worker = _Worker(log, table, worker.committed(), rules, pace or PACE)
        return drafts + _drained(worker, log)
    for stop in stops:
        for _ in range(stop):
            worker.batch()
        drafts += worker.drafts
        worker = _Worker(log, table, worker.committed(), rules, pace or PACE)
    while worker.batch():
        pass
    return drafts + _drained(worker, log)


def _drained(worker: _Worker, log: dict[TP, list[BaseModel]]) -> list[AlertDraft]:
    worker.flush()
    assert all(len(m) == 0 for m in worker.merges.values()), "records left in a merge"
    assert worker.committed() == {tp: len(payloads) for tp, payloads in log.items()}
    return worker.drafts


@pytest.fixture(scope="module")
def scenario() -> tuple[dict[TP, list[BaseModel]], dict[str, dict[str, Any]], RuleSet]:
    rules = load_rules()
    records = _load(10, 130)
    pipeline = OfflinePipeline(rules, partitions=PARTITIONS)
    expected = {d.event_id: _event(d) for source, p in records for d in pipeline.feed(source, p)}
    log: dict[TP, list[BaseModel]] = defaultdict(list)
    for topic, payload in records:
        log[(topic, partition_of(str(getattr(payload, "patient_id")), PARTITIONS))].append(payload)  # noqa: B009
    return dict(log), expected, rules


def test_the_worker_model_alone_raises_what_the_offline_pipeline_raises(
    scenario: tuple[dict[TP, list[BaseModel]], dict[str, dict[str, Any]], RuleSet],
) -> None:
    log, expected, rules = scenario
    rules_raised = {d.rule_id for d in _run(log, rules, [])}
    assert {"technical.vitals_no_data", "technical.nirs_no_data"} <= rules_raised
    assert "brain.rso2_drop_from_baseline" in rules_raised
    assert {d.event_id: _event(d) for d in _run(log, rules, [])} == expected


def _assert_same_events(drafts: list[AlertDraft], expected: dict[str, dict[str, Any]]) -> None:
    found: dict[str, dict[str, Any]] = {}
    for draft in drafts:  # a repeat (at-least-once) has the same content
        event = _event(draft)
        assert found.setdefault(draft.event_id, event) == event
    missing = sorted(str(expected[i]) for i in expected.keys() - found.keys())
    extra = sorted(str(found[i]) for i in found.keys() - expected.keys())
    assert (missing, extra) == ([], [])
    assert found == expected


@pytest.mark.parametrize("stops", [[s] for s in range(2, 80, 7)] + [[20, 7], [30, 4, 9]])
def test_a_worker_taking_over_from_the_written_states_raises_the_same_events(
    scenario: tuple[dict[TP, list[BaseModel]], dict[str, dict[str, Any]], RuleSet],
    stops: list[int],
) -> None:
    log, expected, rules = scenario
    _assert_same_events(_run(log, rules, stops), expected)


@pytest.mark.parametrize("vitals_nirs", [(2, 2), (5, 2), (4, 3), (7, 5)])
def test_a_take_over_between_records_at_a_grid_time_and_their_tick_misses_no_tick(
    scenario: tuple[dict[TP, list[BaseModel]], dict[str, dict[str, Any]], RuleSet],
    vitals_nirs: tuple[int, int],
) -> None:
    """The worker is replaced whenever a batch ends with records at a grid time released
    and that time's tick still to come (it comes before the next record): the states
    written then have not been through that tick, and the records re-read may all be
    later, so the new worker must resume the ticks before them (bench/rebalance.py:
    "no data" alarms starting a tick late, extra and missing events)."""
    log, expected, rules = scenario
    vitals, nirs = vitals_nirs
    _assert_same_events(_run(log, rules, None, dict(PACE, vitals=vitals, nirs=nirs)), expected)


@pytest.mark.parametrize("every", [97, 400, 1013])
def test_states_written_and_read_back_mid_stream_continue_identically(
    scenario: tuple[dict[TP, list[BaseModel]], dict[str, dict[str, Any]], RuleSet],
    every: int,
) -> None:
    """Every feature group, source clock and alarm survives its JSON round trip: the
    offline pipeline with each patient's state replaced by its written copy every
    ``every`` records raises the same events as the uninterrupted one."""
    _log, expected, rules = scenario
    pipeline = OfflinePipeline(rules, partitions=PARTITIONS)
    found: dict[str, dict[str, Any]] = {}
    for n, (source, payload) in enumerate(_load(10, 130), start=1):
        found |= {d.event_id: _event(d) for d in pipeline.feed(source, payload)}
        if n % every == 0:
            for patient_id, state in pipeline.patients.items():
                copy = json.loads(json.dumps(state.to_state()))
                pipeline.patients[patient_id] = PatientState.from_state(copy)
    assert found == expected


def test_a_patients_state_goes_to_the_changelog_partition_of_its_inputs(tmp_path: Path) -> None:
    """The worker that is given a partition recovers the states of that partition's
    patients: the table's changelog key is the inputs' key (the patient id's bytes),
    so the same murmur2 partition. A ``str`` key went out as JSON (quotes included):
    after a rebalance a worker recovered other patients' states and started its own
    from nothing (bench/rebalance.py: rSO2 baselines lost, missing and extra events)."""
    topics = TopicRegistry(prefix="t.", partitions=PARTITIONS)
    config = WorkerConfig("w-replay", "127.0.0.1:9", "memory://", tmp_path, topics, load_rules())
    table = create_app(config).tables["patient-state"]
    for patient_id in (f"sim-{bed:03d}" for bed in range(1, 41)):
        key, _headers = table.changelog_topic.prepare_key(
            state_key(patient_id), table.key_serializer, table.schema, None
        )
        assert key == patient_id.encode()
        hashed: int = murmur2(key)
        assert (hashed & 0x7FFFFFFF) % PARTITIONS == partition_of(patient_id, PARTITIONS)
