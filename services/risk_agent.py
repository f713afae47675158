"""``vigil risk``: the online risk agent, one outcome and one model per process.

Consumes the features topic (snapshots from the worker) and the context topic
(Admission, OutcomeLabel, Discharge), runs :class:`streams.risk.engine.RiskEngine`,
publishes a :class:`~schemas.derived.RiskScore` per snapshot on the risk topic.

- **Event-time merge.** Per partition (features and context are co-partitioned by
  patient), context events are held until the features of that partition have passed
  their event time, so a Discharge is applied after the patient's last snapshot even
  when the worker lags the raw context topic. At the end of a replay no later snapshot
  comes to release the last discharges: held context is applied once nothing has
  arrived for ``idle_flush_s`` of wall time *and* the worker has drained its input
  (``IdleRelease``). A worker that merely pauses (a slow stretch, a rebalance) must not
  trigger it: that applied every admission, label and discharge a replay had published
  ahead at once, before the patients' snapshots, so none of them was learned.
- **Checkpoint = file.** The whole engine (model, label buffers, per-patient feature
  state, monitor), the next offset to read of every partition and the context events
  read but still held for the merge are pickled together
  every ``checkpoint_every_s`` (or less often when a checkpoint is slow,
  ``checkpoint_gap_s``) and at shutdown, written atomically (temp file, fsync,
  rename) *after* the producer has flushed every risk message of the records consumed.
  A restarted (even SIGKILLed) agent loads it, seeks to those offsets and so comes back
  with the model it had; records after the checkpoint are read again and give the same
  RiskScores again (at-least-once, same values).
- **Monitoring.** Prometheus: rolling prequential AUROC, log loss and calibration error,
  labels learned, drift events (ADWIN on the log loss; each also logged as a JSON event).
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge, start_http_server

from schemas.context import Admission, ContextEvent, Discharge, OutcomeLabel
from schemas.derived import Contribution, FeatureSnapshot, Organ, RiskScore
from services.config import Settings
from services.kafka_io import consumer_group_lags, reliable_producer
from streams.merge import SOURCES as SNAPSHOT_SOURCES
from streams.risk.engine import EngineConfig, Prediction, RiskEngine, dumps, load_checkpoint

log = logging.getLogger(__name__)

AUROC = Gauge("vigil_risk_rolling_auroc", "Prequential AUROC over the last labels", ["model"])
LOG_LOSS = Gauge("vigil_risk_rolling_log_loss", "Prequential log loss", ["model"])
CALIBRATION = Gauge(
    "vigil_risk_calibration_error", "Expected calibration error (10 bins)", ["model"]
)
LEARNED = Gauge("vigil_risk_labels_learned", "Labels the model has learned", ["model"])
COLD = Gauge("vigil_risk_cold_start", "1 while the rule-based fallback is published", ["model"])
DRIFTS = Counter("vigil_risk_drift_events_total", "Drift detected on the loss (ADWIN)", ["model"])
PREDICTIONS = Counter("vigil_risk_predictions_total", "RiskScores published", ["model"])
CHECKPOINTS = Counter("vigil_risk_checkpoints_total", "Checkpoints written", ["model"])
CHECKPOINT_SHARE = 0.05
"""At most this share of the agent's wall time goes to writing checkpoints."""


def checkpoint_gap_s(every_s: float, took_s: float) -> float:
    """Seconds until the next checkpoint, after one that took ``took_s``.

    A replay at full speed can hold a whole data set's context (hundreds of thousands
    of labels) in the checkpoint, which then takes seconds to write: written every
    ``every_s`` regardless, checkpoints took 92 % of the agent's time (py-spy, protocol
    (a) on all of set A). Spacing them keeps that share at :data:`CHECKPOINT_SHARE`.

    >>> checkpoint_gap_s(30.0, 0.2), checkpoint_gap_s(5.0, 4.0)
    (30.0, 80.0)
    """
    return max(every_s, took_s / CHECKPOINT_SHARE)


def checkpoint_path(settings: Settings, outcome: str) -> Path:
    return settings.data_dir / "risk" / f"{settings.topic_prefix}{outcome}.ckpt"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def to_risk_score(pred: Prediction) -> RiskScore:
    from datetime import UTC, datetime

    return RiskScore(
        patient_id=pred.patient_id,
        computed_at=datetime.fromtimestamp(pred.at, UTC),
        outcome=pred.outcome,
        horizon_h=6.0 if pred.outcome.endswith("_6h") else None,
        probability=min(1.0, max(0.0, pred.probability)),
        per_organ={Organ(o): min(1.0, max(0.0, p)) for o, p in pred.per_organ.items()},
        model_id=pred.model_id,
        model_version=pred.model_version,
        cold_start=pred.cold_start,
        top_contributions=tuple(
            Contribution(feature=name, value=value, contribution=round(c, 4))
            for name, c, value in pred.contributions
        ),
        decision_threshold=min(1.0, max(0.0, pred.threshold)),
    )


@dataclass
class _Held:
    """Context events of one partition waiting for the features to pass their time.

    ``events`` is a heap of (event time, arrival sequence, event): a replay can hold a
    whole data set's admissions and discharges, so releasing must not rescan them all.
    """

    events: list[tuple[float, int, Any]] = field(default_factory=list)
    features_at: float = float("-inf")


@dataclass
class IdleRelease:
    """When to apply all held context although no snapshot has passed its time.

    Due once the agent has read nothing for ``idle_s`` of wall time, the worker then had
    no input left (``worker_drained``: its group's committed lag is 0 on every topic that
    makes snapshots; the worker publishes a snapshot before it commits its input), and
    nothing came and it was still drained ``settle_s`` later. Checked at most every
    ``idle_s``.

    >>> release, drained = IdleRelease(idle_s=10.0, last_record=0.0), [False]
    >>> [release.due(t, t == 0.0, lambda: drained[0]) for t in (0.0, 5.0, 10.0, 15.0)]
    [False, False, False, False]
    >>> drained[0] = True
    >>> [release.due(t, False, lambda: drained[0]) for t in (20.0, 21.0, 22.5, 30.0)]
    [False, False, True, False]
    >>> release.due(31.0, True, lambda: True), release.due(45.0, False, lambda: True)
    (False, False)
    """

    idle_s: float
    last_record: float
    settle_s: float = 2.0
    next_check: float = float("-inf")
    drained_at: float | None = None
    released: bool = True  # nothing read since the last release: nothing to release

    def due(self, now: float, had_records: bool, worker_drained: Callable[[], bool]) -> bool:
        if had_records:
            self.last_record, self.released, self.drained_at = now, False, None
            return False
        if self.released or now - self.last_record < self.idle_s:
            return False
        if self.drained_at is not None:
            if now - self.drained_at < self.settle_s:
                return False
            if not worker_drained():  # still so after the settling time (new input came)
                self.drained_at = None
                return False
            self.released = True
            return True
        if now >= self.next_check:
            self.next_check = now + self.idle_s
            if worker_drained():
                self.drained_at = now
        return False


@dataclass
class RiskAgent:
    settings: Settings
    config: EngineConfig
    checkpoint: Path
    checkpoint_every_s: float = 30.0
    idle_flush_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    engine: RiskEngine = field(init=False)
    held: dict[int, _Held] = field(default_factory=dict)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.engine = self._load()
        self.label = self.engine.model_id

    def _load(self) -> RiskEngine:
        if self.checkpoint.exists():
            engine, held = load_checkpoint(self.checkpoint.read_bytes())
            for partition, (features_at, events) in (held or {}).items():
                self.held[int(partition)] = _Held(list(events), float(features_at))
                self._seq = max([self._seq, *(seq for _at, seq, _e in events)])
            log.info(
                "restored %s (%d labels learned) from %s",
                engine.model_version,
                engine.model.learned,
                self.checkpoint,
            )
            if engine.config.outcome != self.config.outcome:
                raise ValueError(
                    f"checkpoint {self.checkpoint} is for {engine.config.outcome!r}, "
                    f"not {self.config.outcome!r}"
                )
            return engine
        log.info("no checkpoint at %s: a new %s model", self.checkpoint, self.config.learner)
        return RiskEngine(self.config)

    # ---- records -------------------------------------------------------------------

    def handle_snapshot(self, partition: int, raw: bytes) -> RiskScore | None:
        snap = FeatureSnapshot.model_validate_json(raw)
        at = snap.computed_at.timestamp()
        self._release(partition, before=at)
        hold = self.held.setdefault(partition, _Held())
        hold.features_at = max(hold.features_at, at)
        features = {name: fv.value for name, fv in snap.features.items()}
        organs = {str(o.value): s.subscore for o, s in snap.organs.items()}
        drifts = self.engine.monitor.drifts
        pred = self.engine.on_snapshot(snap.patient_id, at, features, organs or None)
        self._report_drift(drifts, at)  # MODS labels are joined by snapshots
        return to_risk_score(pred)

    def handle_context(self, partition: int, raw: bytes) -> None:
        event = ContextEvent.model_validate_json(raw).root
        if not isinstance(event, Admission | OutcomeLabel | Discharge):
            return
        self._seq += 1
        at = event.observed_at.timestamp()
        hold = self.held.setdefault(partition, _Held())
        if isinstance(event, OutcomeLabel):
            self._apply(event)  # labels are only stored until the discharge: no need to wait
            return
        heapq.heappush(hold.events, (at, self._seq, event))
        if at < hold.features_at:
            self._release(partition, before=hold.features_at)

    def _release(self, partition: int, before: float | None) -> None:
        """Apply the held context of ``partition`` earlier than ``before`` (all if None),
        in event time (ties in arrival order)."""
        hold = self.held.get(partition)
        if hold is None:
            return
        events = hold.events
        while events and (before is None or events[0][0] < before):
            self._apply(heapq.heappop(events)[2])

    def _apply(self, event: Any) -> None:
        at = event.observed_at.timestamp()
        if isinstance(event, Admission):
            self.engine.on_admission(event.patient_id, at, event.age_years, event.sex)
        elif isinstance(event, OutcomeLabel):
            self.engine.on_label(event.patient_id, event.outcome, at, event.label)
        elif isinstance(event, Discharge):
            drifts = self.engine.monitor.drifts
            fits = getattr(self.engine.model, "fits", 0)
            self.engine.on_discharge(event.patient_id, at)
            self._report_drift(drifts, at)
            self._report_refit(fits)

    def _report_refit(self, fits_before: int) -> None:
        """Log a refit of the model (``gbdt`` refits its trees on a schedule of rows)."""
        model = self.engine.model
        if getattr(model, "fits", 0) > fits_before:
            log.info(
                "refit %s: trees fit on %d rows in %.1f s; next at %d rows learned",
                self.engine.model_version,
                getattr(model, "fit_rows", 0),
                getattr(model, "last_fit_s", 0.0),
                getattr(model, "next_fit_at", 0),
            )

    def _report_drift(self, drifts_before: int, at: float) -> None:
        """Count and log the drift the last join detected, if any (a metric and a JSON
        event per detection)."""
        new = self.engine.monitor.drifts - drifts_before
        if new <= 0:
            return
        DRIFTS.labels(self.label).inc(new)
        log.warning(
            json.dumps(
                {
                    "event": "risk_drift_detected",
                    "model_id": self.engine.model_id,
                    "model_version": self.engine.model_version,
                    "at": at,
                    "drifts": self.engine.monitor.drifts,
                }
            )
        )

    def flush_held(self) -> None:
        """Apply every held context event (partitions in order, each in event time)."""
        for partition in sorted(self.held):
            self._release(partition, before=None)

    def worker_drained(self) -> bool:
        """Whether the worker (group ``app_id``) has committed every record of the topics
        that make snapshots: it has published every snapshot of what it was given. False
        when the broker cannot say (the agent keeps running and asks again later)."""
        settings = self.settings
        topics = [settings.topics.name(t) for t in SNAPSHOT_SOURCES]
        try:
            lags = consumer_group_lags(settings.bootstrap_servers, settings.app_id, topics)
            return all(lag == 0 for lag in lags.values())
        except Exception:  # a broker outage must not stop the agent
            log.warning("the worker's lag is not available; held context stays held")
            return False

    def export_metrics(self) -> None:
        monitor = self.engine.monitor
        if monitor.count:
            AUROC.labels(self.label).set(monitor.auroc())
            LOG_LOSS.labels(self.label).set(monitor.log_loss())
            CALIBRATION.labels(self.label).set(monitor.calibration()[0])
        LEARNED.labels(self.label).set(self.engine.model.learned)
        COLD.labels(self.label).set(1.0 if self.engine.cold else 0.0)

    def save(self) -> None:
        """Checkpoint the engine with the context still held (its offsets are consumed)."""
        held = {p: (h.features_at, list(h.events)) for p, h in self.held.items() if h.events}
        write_atomic(self.checkpoint, dumps(self.engine, held))
        CHECKPOINTS.labels(self.label).inc()

    # ---- the loop ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        topics = self.settings.topics
        features_topic, context_topic = topics.name("features"), topics.name("context")
        risk_topic = topics.name("risk")
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            client_id="vigil-risk",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=2000,
        )
        producer = reliable_producer(self.settings.bootstrap_servers, client_id="vigil-risk")
        parts = [
            TopicPartition(t, p)
            for t in (features_topic, context_topic)
            for p in range(topics.partitions_of("features"))
        ]
        consumer.assign(parts)
        for tp in parts:
            offset = self.engine.positions.get(f"{tp.topic}:{tp.partition}")
            if offset is not None:
                consumer.seek(tp, offset)
            else:
                consumer.seek_to_beginning(tp)
        last_save = self.clock()
        gap_s = self.checkpoint_every_s
        idle = IdleRelease(  # context restored from the checkpoint may be waiting already
            self.idle_flush_s,
            last_record=last_save,
            released=not any(h.events for h in self.held.values()),
        )
        log.info("risk agent %s on %s -> %s", self.engine.model_version, features_topic, risk_topic)
        try:
            while not stop.is_set():
                batches = consumer.poll(timeout_ms=500)
                records = sorted(
                    (r for batch in batches.values() for r in batch),
                    key=lambda r: (r.topic != context_topic, r.timestamp),
                )  # context first: a label is never later than the snapshots it labels
                for record in records:
                    key = f"{record.topic}:{record.partition}"
                    try:
                        if record.topic == features_topic:
                            score = self.handle_snapshot(record.partition, record.value)
                            if score is not None:
                                producer.send(
                                    risk_topic,
                                    key=score.patient_id.encode(),
                                    value=score.model_dump_json().encode(),
                                )
                                PREDICTIONS.labels(self.label).inc()
                        else:
                            self.handle_context(record.partition, record.value)
                    except ValueError as exc:  # pydantic ValidationError is a ValueError
                        log.error("skipping bad record %s@%d: %s", key, record.offset, exc)
                    self.engine.positions[key] = record.offset + 1
                now = self.clock()
                if idle.due(now, bool(records), self.worker_drained):
                    waiting = sum(len(h.events) for h in self.held.values())
                    log.info("idle, the worker drained: %d held context events applied", waiting)
                    self.flush_held()
                if now - last_save >= gap_s:
                    producer.flush()
                    self.save()
                    self.export_metrics()
                    last_save = self.clock()
                    gap_s = checkpoint_gap_s(self.checkpoint_every_s, last_save - now)
        finally:
            producer.flush()
            self.save()
            producer.close()
            consumer.close()
            log.info("risk agent stopped; checkpoint %s", self.checkpoint)


def run_agent(
    settings: Settings,
    config: EngineConfig,
    *,
    checkpoint: Path | None = None,
    checkpoint_every_s: float = 30.0,
    metrics_port: int = 0,
) -> None:
    """Run until SIGTERM/SIGINT (a checkpoint is written on the way out)."""
    agent = RiskAgent(
        settings,
        config,
        checkpoint or checkpoint_path(settings, config.outcome),
        checkpoint_every_s=checkpoint_every_s,
    )
    if metrics_port:
        start_http_server(metrics_port, addr=settings.metrics_host)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent.export_metrics()
    agent.run(stop)
