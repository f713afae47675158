"""PhysioNet 2019 benchmark: features through the worker's own code, scoring, baselines.

Two ways to get the per-hour feature snapshots of a patient, both from
:class:`streams.patient.PatientState` (the worker's per-patient state):

- :func:`offline_snapshots` feeds the replay's records of one patient straight into a
  ``PatientState`` and takes ``snapshot()`` after each hourly row (used for the
  ``--pretrain`` phase and for the learner comparison in ``bench/risk.py``);
- the online phase of ``vigil evaluate physionet`` runs the real broker, worker and
  risk agent, and reads back the risk topic (:mod:`services.cli_risk`).

Scoring per row: the prediction for hour ``k`` of a patient is the last one published
for an event time before the next row's (the snapshot that includes the row, before the
next row exists). A row that brought no value (an empty hour) publishes nothing, so the
prediction in effect is the previous hour's, as on a monitor (``rows_carried_forward``);
rows before any prediction count as "no alarm" and probability 0
(``rows_without_prediction``).
"""

from __future__ import annotations

import heapq
import json
import math
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from schemas.context import Admission, ContextEvent, Discharge, OutcomeLabel
from schemas.observations import ObservationMessage
from schemas.topics import TopicRegistry
from services.replay.common import DEFAULT_START
from services.replay.physionet2019 import PatientFile, patient_files, read_patient
from streams.patient import PatientState
from streams.risk.utility import auprc, auroc, normalised_utility
from streams.rules import RuleSet, load_rules


@dataclass
class PatientSeries:
    """One patient's hourly snapshots (feature values by name) and labels."""

    patient_id: str
    times: list[float] = field(default_factory=list)  # event time of each row (s)
    features: list[dict[str, float | None]] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    admitted_at: float = 0.0
    age_years: float | None = None
    sex: str = "unknown"


def offline_snapshots(
    file: PatientFile, anchor: datetime, rules: RuleSet | None = None
) -> PatientSeries:
    """The snapshots the worker would publish after each of the patient's hourly rows."""
    rules = rules if rules is not None else load_rules()
    state = PatientState(file.patient_id)
    series = PatientSeries(file.patient_id, admitted_at=anchor.timestamp())
    row_at: float | None = None
    labels: dict[float, bool] = {}

    def close_row() -> None:
        if row_at is None:
            return
        snap = state.snapshot(row_at)
        series.times.append(row_at)
        series.features.append({k: v.value for k, v in snap.features.items()})

    for record in read_patient(file, anchor):
        payload: Any = record.payload
        event = payload.root if isinstance(payload, ContextEvent) else payload
        if isinstance(event, OutcomeLabel):
            labels[event.observed_at.timestamp()] = event.label
            continue
        if isinstance(event, Admission):
            series.age_years, series.sex = event.age_years, event.sex
        if isinstance(event, Discharge):
            continue
        at = event.observed_at.timestamp()
        if isinstance(event, ObservationMessage):
            if row_at is not None and at > row_at:
                close_row()
            row_at = at
            # The worker's patient clock only moves with applied samples and refuses a sample
            # more than FUTURE_TOLERANCE_S ahead of it, so an hourly row after a silent hour
            # would be refused as "from the future". The row's time is the watermark here
            # (as the partition's ticks would have it in a busy unit): advance to it first.
            if state.clock is None or state.clock < at:
                state.clock = at
            state.apply_observations(record.topic, event, rules)
        else:
            state.apply_context(event, rules)
    close_row()
    # rows with no measurement still get a label: align labels to snapshot times
    series.labels = [labels.get(t, False) for t in series.times]
    return series


def load_series(
    path: Path,
    *,
    anchor: datetime = DEFAULT_START,
    only: frozenset[str] | None = None,
    limit: int | None = None,
) -> Iterator[PatientSeries]:
    rules = load_rules()
    for file in patient_files(path, limit=limit, only=only):
        yield offline_snapshots(file, anchor, rules)


# ---- scoring -------------------------------------------------------------------------


@dataclass
class RowScores:
    """Per patient, per row: label, probability and binary decision."""

    labels: list[np.ndarray[Any, Any]] = field(default_factory=list)
    scores: list[np.ndarray[Any, Any]] = field(default_factory=list)
    decisions: list[np.ndarray[Any, Any]] = field(default_factory=list)
    rows_without_prediction: int = 0
    rows_carried_forward: int = 0

    def add(
        self, labels: Sequence[bool], scores: Sequence[float], decisions: Sequence[bool]
    ) -> None:
        self.labels.append(np.asarray(labels, dtype=bool))
        self.scores.append(np.asarray(scores, dtype=float))
        self.decisions.append(np.asarray(decisions, dtype=bool))

    def summary(self) -> dict[str, float | int]:
        y = np.concatenate(self.labels) if self.labels else np.zeros(0, dtype=bool)
        s = np.concatenate(self.scores) if self.scores else np.zeros(0)
        d = np.concatenate(self.decisions) if self.decisions else np.zeros(0, dtype=bool)
        patient_days = len(y) / 24.0
        days = max(patient_days, 1e-9)
        return {
            "patients": len(self.labels),
            "rows": len(y),
            "septic_patients": int(sum(bool(lab.any()) for lab in self.labels)),
            "utility": round(normalised_utility(self.labels, self.decisions), 4),
            "auroc": round(auroc(y, s), 4),
            "auprc": round(auprc(y, s), 4),
            "alarm_hours_per_patient_day": round(float(d.sum()) / max(patient_days, 1e-9), 3),
            "alerts_per_patient_day": round(_alert_onsets(self.decisions) / days, 3),
            "rows_without_prediction": self.rows_without_prediction,
            "rows_carried_forward": self.rows_carried_forward,
        }


def _alert_onsets(decisions: Sequence[np.ndarray[Any, Any]]) -> int:
    """Alerts = runs of positive hours (an alarm raised once and held)."""
    total = 0
    for d in decisions:
        if len(d):
            total += int(d[0]) + int(np.sum(d[1:] & ~d[:-1]))
    return total


BASELINES: Mapping[str, tuple[str, float]] = {
    "qsofa_ge_2": ("qsofa", 2.0),
    "news2_ge_5": ("news2", 5.0),
    "news2_known_ge_5": ("news2_known_total", 5.0),
    "sofa_rise_ge_2": ("sofa_total_rise_24h", 2.0),
}
"""Rule baselines: (snapshot feature, alarm at or above). The worker's NEWS2 is unknown
without a consciousness level, which PhysioNet 2019 lacks; ``news2_known_total`` is the
sum of the NEWS2 points that are known (a lower bound of NEWS2, via
``streams.features.scores.news2``; supplemental O2 = FiO2 > 21%)."""


def baseline_value(feature: str, features: Mapping[str, float | None]) -> float | None:
    """The baseline's score from one snapshot's feature values.

    >>> baseline_value("news2_known_total", {"resp_rate_per_min": 26.0, "sbp_mmhg": 88.0})
    6.0
    """
    if feature != "news2_known_total":
        return features.get(feature)
    from streams.features.scores import news2

    fio2 = features.get("fio2_pct")
    score = news2(
        resp_rate_per_min=features.get("resp_rate_per_min"),
        spo2_pct=features.get("spo2_pct"),
        on_supplemental_o2=None if fio2 is None else fio2 > 21.0,
        sbp_mmhg=features.get("sbp_mmhg"),
        pulse_per_min=features.get("heart_rate_per_min"),
        consciousness_alert=None,
        temperature_cel=features.get("temperature_cel"),
    )
    return float(score.known_total)


def baseline_scores(series: Sequence[PatientSeries]) -> dict[str, RowScores]:
    """qSOFA >= 2, NEWS2 >= 5 and SOFA rise >= 2 from the same snapshots (score = value)."""
    out = {name: RowScores() for name in BASELINES}
    for patient in series:
        for name, (feature, cut) in BASELINES.items():
            values = [baseline_value(feature, f) for f in patient.features]
            score = [-1.0 if v is None else float(v) for v in values]
            out[name].add(patient.labels, score, [v is not None and v >= cut for v in values])
    return out


def merge_predictions(
    rows: Mapping[str, tuple[list[float], list[bool]]],
    predictions: Mapping[str, list[tuple[float, float, float]]],
    threshold: float | None,
) -> RowScores:
    """Per-row scores from published predictions ``(at, probability, threshold)``.

    The prediction for a row is the last one with ``at < next row time``: its own row's
    (``row time <= at``) or, for a row that published nothing, the one still in effect.

    >>> rows = {"p1": ([0.0, 3600.0, 7200.0], [False, False, True])}
    >>> scores = merge_predictions(rows, {"p1": [(3600.0, 0.9, 0.5)]}, None)
    >>> scores.scores[0].tolist(), scores.rows_without_prediction
    ([0.0, 0.9, 0.9], 1)
    >>> scores.rows_carried_forward
    1
    """
    scores = RowScores()
    for pid, (times, labels) in rows.items():
        preds = sorted(predictions.get(pid, []))
        pred_times = [t for t, _p, _th in preds]
        prob, decide = [], []
        for i, t in enumerate(times):
            nxt = times[i + 1] if i + 1 < len(times) else math.inf
            j = _last_before(pred_times, nxt) if pred_times else -1
            if j >= 0:
                _at, p, th = preds[j]
                scores.rows_carried_forward += pred_times[j] < t
                prob.append(p)
                decide.append(p >= (threshold if threshold is not None else th))
            else:
                scores.rows_without_prediction += 1
                prob.append(0.0)
                decide.append(False)
        scores.add(labels, prob, decide)
    return scores


def _last_before(times: Sequence[float], limit: float) -> int:
    import bisect

    return bisect.bisect_left(times, limit) - 1


def write_results(path: Path, results: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def staggered_anchors(
    patient_ids: Sequence[str], start: datetime, every: timedelta
) -> dict[str, datetime]:
    """Admissions spread over time (``every`` apart, in id order), like a real unit's
    census, so labels of early patients exist before later ones arrive."""
    return {pid: start + i * every for i, pid in enumerate(sorted(patient_ids))}


def in_time_order(series: Sequence[PatientSeries]) -> Iterator[tuple[str, PatientSeries, int]]:
    """``("row", patient, i)`` events in event time, ``("discharge", patient, last)``
    after each patient's last row: what the risk agent sees on its topics."""
    heap: list[tuple[float, int, str, int]] = []
    for n, patient in enumerate(series):
        if patient.times:
            heap.append((patient.times[0], n, "row", 0))
    heapq.heapify(heap)
    while heap:
        _at, n, kind, i = heapq.heappop(heap)
        patient = series[n]
        if kind == "row":
            yield "row", patient, i
            if i + 1 < len(patient.times):
                heapq.heappush(heap, (patient.times[i + 1], n, "row", i + 1))
            else:
                heapq.heappush(heap, (patient.times[i] + 1e-3, n, "discharge", i))
        else:
            yield "discharge", patient, i


# ---- pretraining and the broker run ----------------------------------------------------


def id_range(text: str | None) -> tuple[str, str]:
    """``p000001-p010000``, ``-p010000`` or ``p010001-`` as inclusive (low, high) ids.

    >>> id_range("p010001-")
    ('p010001', '~')
    >>> id_range(None)
    ('', '~')
    """
    if not text:
        return "", "~"
    low, _, high = text.partition("-")
    return low.strip(), high.strip() or "~"


def select_files(path: Path, ids: str | None, limit: int | None = None) -> list[PatientFile]:
    """The patients of ``path`` with ids in ``ids`` (first ``limit``); a clear error when none.

    >>> select_files(Path("/nonexistent.zip"), None)
    Traceback (most recent call last):
    ...
    ValueError: /nonexistent.zip holds no PhysioNet 2019 patient file (pNNNNNN.psv)
    """
    low, high = id_range(ids)
    found = patient_files(path) if path.exists() else []
    files = [f for f in found if low <= f.patient_id <= high]
    if not files:
        where = f" with ids in {ids}" if ids else ""
        raise ValueError(f"{path} holds no PhysioNet 2019 patient file (pNNNNNN.psv){where}")
    return files[:limit] if limit else files


def pretrain(engine: Any, files: Sequence[PatientFile], *, log_every: int = 1000) -> int:
    """Learn every hour of every patient with its label (offline, through the worker's
    feature code); returns the rows learned."""
    import logging

    log = logging.getLogger(__name__)
    rules = load_rules()
    rows = 0
    for n, file in enumerate(files, start=1):
        series = offline_snapshots(file, DEFAULT_START, rules)
        pid = series.patient_id
        engine.on_admission(pid, series.admitted_at, series.age_years, series.sex)
        for at, features in zip(series.times, series.features, strict=True):
            engine.on_snapshot(pid, at, features)
        for at, label in zip(series.times, series.labels, strict=True):
            engine.on_label(pid, "sepsis", at, label)
        rows += engine.on_discharge(pid, series.times[-1] if series.times else 0.0)
        if n % log_every == 0:
            log.info("pretrained on %d patients (%d rows)", n, rows)
    return rows


def row_times(file: PatientFile, anchor: datetime) -> tuple[list[float], list[bool]]:
    """Event time and SepsisLabel of each parseable row (as the replay times them)."""
    lines = file.text.decode().splitlines()
    header = lines[0].strip().split("|") if lines else []
    col = {name: i for i, name in enumerate(header)}
    times, labels = [], []
    for line in lines[1:]:
        cells = line.strip().split("|")
        if len(cells) != len(header):
            continue
        try:
            iculos = int(float(cells[col["ICULOS"]]))
            label = float(cells[col["SepsisLabel"]])
        except (ValueError, KeyError):
            continue
        times.append((anchor + timedelta(hours=iculos)).timestamp())
        labels.append(not math.isnan(label) and label >= 1)
    return times, labels


@dataclass
class BrokerRun:
    """One isolated deployment on a broker for an evaluation: prefix, group, folder."""

    bootstrap: str
    workdir: Path
    prefix: str
    app_id: str
    partitions: int = 4
    processes: list[Any] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        import os

        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "VIGIL_TOPIC_PREFIX": self.prefix,
            "VIGIL_PARTITIONS": str(self.partitions),
            "VIGIL_APP_ID": self.app_id,
            "VIGIL_DATA_DIR": str(self.workdir),
            "VIGIL_METRICS_PORT": "0",
            "VIGIL_INGEST_METRICS_PORT": "0",
        }


def read_topic(bootstrap: str, topic: str, idle_s: float = 5.0) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a topic, read until nothing new arrives for ``idle_s``."""
    import time

    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_poll_records=5000,
    )
    out: list[tuple[bytes, bytes]] = []
    try:
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    out.append((record.key, record.value))
                    last = time.monotonic()
    finally:
        consumer.close()
    return out


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[str, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        consumer.close()
    return {f"{tp.topic}:{tp.partition}": int(v) for tp, v in ends.items()}


def score_broker_output(
    files: Sequence[PatientFile],
    anchors: Mapping[str, datetime],
    risk_values: Sequence[bytes],
    feature_values: Sequence[bytes],
    threshold: float | None,
) -> tuple[dict[str, Any], RowScores]:
    """Per-row figures of the risk agent and of the baselines from what the topics hold
    (and the agent's per-row scores, for plots)."""
    from schemas.derived import FeatureSnapshot, RiskScore

    rows = {f.patient_id: row_times(f, anchors[f.patient_id]) for f in files}
    predictions: dict[str, list[tuple[float, float, float]]] = {}
    for raw in risk_values:
        score = RiskScore.model_validate_json(raw)
        th = score.decision_threshold if score.decision_threshold is not None else 0.5
        predictions.setdefault(score.patient_id, []).append(
            (score.computed_at.timestamp(), score.probability, th)
        )
    model = merge_predictions(rows, predictions, threshold)
    baselines: dict[str, dict[str, list[tuple[float, float, float]]]] = {b: {} for b in BASELINES}
    for raw in feature_values:
        snap = FeatureSnapshot.model_validate_json(raw)
        at = snap.computed_at.timestamp()
        values = {name: fv.value for name, fv in snap.features.items()}
        for name, (feature, cut) in BASELINES.items():
            value = baseline_value(feature, values)
            level = value if value is not None else -1.0
            baselines[name].setdefault(snap.patient_id, []).append((at, level, cut))
    out: dict[str, Any] = {"model": model.summary()}
    for name in BASELINES:
        out[name] = merge_predictions(rows, baselines[name], None).summary()
    return out, model


def plots(scores: RowScores, stem: Path, title: str) -> dict[str, str]:
    """ROC and calibration PNGs of per-row scores beside the results file."""
    from services.report.plots import calibration_png, roc_png

    y = np.concatenate(scores.labels) if scores.labels else np.zeros(0, dtype=bool)
    s = np.concatenate(scores.scores) if scores.scores else np.zeros(0)
    if not y.any() or y.all():
        return {}
    roc = stem.with_name(stem.name + "_roc.png")
    calibration = stem.with_name(stem.name + "_calibration.png")
    roc_png(roc, y, s, f"{title}: ROC per hour")
    calibration_png(calibration, y, s, bins=10, title=f"{title}: calibration per hour")
    return {"roc_png": str(roc), "calibration_png": str(calibration)}


def wait_for_pipeline(
    run: BrokerRun,
    registry: TopicRegistry,
    checkpoint: Path,
    timeout_s: float,
    processes: Mapping[str, subprocess.Popen[bytes]],
) -> None:
    """Until the worker has drained every raw topic and the agent every snapshot, and the
    agent holds no context (the last discharges, applied once the worker has drained)."""
    import time

    from services.kafka_io import consumer_group_lags
    from streams.risk.engine import load_checkpoint

    deadline = time.monotonic() + timeout_s
    stable = 0
    while time.monotonic() < deadline:
        for name, proc in processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"the {name} exited; see {run.workdir}")
        topics = [registry.name(t) for t in ("vitals", "labs", "context")]
        lags = consumer_group_lags(run.bootstrap, run.app_id, topics)
        if all(lag == 0 for lag in lags.values()) and checkpoint.exists():
            ends = end_offsets(run.bootstrap, registry.name("features"), run.partitions)
            engine, held = load_checkpoint(checkpoint.read_bytes())
            positions = engine.positions
            done = all(positions.get(k, 0) >= v for k, v in ends.items()) and not any(
                events for _features_at, events in (held or {}).values()
            )
            stable = stable + 1 if done else 0
            if stable >= 3:  # three checks in a row: nothing new came from the worker
                return
        else:
            stable = 0
        time.sleep(5)
    raise RuntimeError(f"pipeline not drained after {timeout_s:.0f} s")
