"""Scoring alert events against ground truth: sensitivity, time to alert, false alarms.

Pure functions over :class:`~schemas.annotations.GroundTruth` annotations (the
simulator's scenarios) and :class:`~schemas.alerts.AlertEvent` starts.

- An *episode* is one annotated clinical scenario; it is *detected* when an alert
  of a rule family that scenario should raise starts on the same patient between
  ``onset - EARLY_S`` and ``end + LATE_S``. Time to alert = first such start -
  onset (negative = before the annotated onset).
- A *false alarm* is a physiological alert start that lies in no clinical
  episode window of its patient (starts inside an artefact annotation are false
  alarms too: that is what artefact handling must prevent). Technical alarms are
  counted separately and matched to device disconnects and artefacts.
- Rates are per bed-day: alarms x 86400 / (beds x run seconds).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.alerts import AlertEvent, AlertPhase
from schemas.annotations import GroundTruth
from schemas.context import OutcomeLabel

EARLY_S = 0.0
LATE_S = 1800.0

EXPECTED_RULES: Mapping[str, tuple[str, ...]] = {
    "hypotension": ("perfusion.",),
    "septic_shock": ("perfusion.", "renal.", "sofa."),
    "venous_congestion_aki": ("congestion.", "renal."),
    "cerebral_desaturation": ("brain.",),
    "crrt_filter_clotting": ("crrt.",),
    "device_disconnect": ("technical.",),
}
"""Rule id prefixes that count as detecting each scenario kind."""


@dataclass(frozen=True)
class EpisodeResult:
    patient_id: str
    scenario: str
    onset: datetime
    detected_by: str | None
    time_to_alert_s: float | None


def _window(truth: GroundTruth) -> tuple[datetime, datetime]:
    end = truth.end if truth.end is not None else datetime.max.replace(tzinfo=truth.onset.tzinfo)
    late = end if truth.end is None else end + timedelta(seconds=LATE_S)
    return truth.onset - timedelta(seconds=EARLY_S), late


def score_alerts(
    truth: Sequence[GroundTruth], alerts: Iterable[AlertEvent], *, beds: int, run_s: float
) -> dict[str, Any]:
    """Sensitivity and time to alert per scenario kind, and false alarms per bed-day.

    >>> from datetime import UTC
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> gt = GroundTruth(run_id="r", patient_id="p1", bed="ICU1-01", scenario="hypotension",
    ...     onset=t0, end=t0 + timedelta(minutes=10), organs=("cardiovascular",), description="d")
    >>> score_alerts([gt], [], beds=1, run_s=86400)["scenarios"]["hypotension"]["sensitivity"]
    0.0
    """
    starts = [a for a in alerts if a.phase is AlertPhase.START]
    episodes: list[EpisodeResult] = []
    for t in truth:
        prefixes = expected_prefixes(t.scenario)
        if prefixes is None:
            continue
        lo, hi = _window(t)
        hits = sorted(
            (a for a in starts if a.patient_id == t.patient_id and lo <= a.triggered_at <= hi),
            key=lambda a: a.triggered_at,
        )
        hits = [a for a in hits if a.rule_id.startswith(prefixes)]
        first = hits[0] if hits else None
        episodes.append(
            EpisodeResult(
                t.patient_id,
                t.scenario,
                t.onset,
                first.rule_id if first else None,
                (first.triggered_at - t.onset).total_seconds() if first else None,
            )
        )
    clinical_windows = [
        (t.patient_id, *_window(t)) for t in truth if expected_prefixes(t.scenario) is not None
    ]
    false_alarms: dict[str, int] = {}
    technical = 0
    for a in starts:
        if a.kind == "technical":
            technical += 1
            continue
        inside = any(
            p == a.patient_id and lo <= a.triggered_at <= hi for p, lo, hi in clinical_windows
        )
        if not inside:
            false_alarms[a.rule_id] = false_alarms.get(a.rule_id, 0) + 1
    bed_days = beds * run_s / 86400.0
    scenarios: dict[str, Any] = {}
    for kind in sorted({e.scenario for e in episodes}):
        of_kind = [e for e in episodes if e.scenario == kind]
        times = [e.time_to_alert_s for e in of_kind if e.time_to_alert_s is not None]
        scenarios[kind] = {
            "episodes": len(of_kind),
            "detected": len(times),
            "sensitivity": len(times) / len(of_kind),
            "time_to_alert_s_median": statistics.median(times) if times else None,
            "time_to_alert_s_max": max(times) if times else None,
            "detected_by": sorted({e.detected_by for e in of_kind if e.detected_by}),
        }
    total_false = sum(false_alarms.values())
    return {
        "beds": beds,
        "run_s": run_s,
        "bed_days": bed_days,
        "alert_starts": len(starts),
        "scenarios": scenarios,
        "false_alarms": total_false,
        "false_alarms_per_bed_day": total_false / bed_days if bed_days else None,
        "false_alarms_by_rule": dict(sorted(false_alarms.items())),
        "technical_alarms": technical,
        "technical_alarms_per_bed_day": technical / bed_days if bed_days else None,
        "episodes": [e.__dict__ | {"onset": e.onset.isoformat()} for e in episodes],
    }


# --- inputs: truth and alert files -------------------------------------------------------


class EvaluationInputError(ValueError):
    """A truth or alerts file that cannot be read: the message names the file and line."""


EXPECTED_RULES_BY_OUTCOME: Mapping[str, tuple[str, ...]] = {
    "sepsis": ("perfusion.", "renal.", "sofa.", "risk."),
}
"""Rule id prefixes that count as detecting a dataset outcome label (e.g. PhysioNet sepsis)."""


def expected_prefixes(scenario: str) -> tuple[str, ...] | None:
    """Rule prefixes that detect a scenario kind or dataset outcome (None: not scored)."""
    return EXPECTED_RULES.get(scenario) or EXPECTED_RULES_BY_OUTCOME.get(scenario)


def _scenario_name(outcome: str) -> str:
    """A scenario name (``[a-z0-9_]+``) for an outcome label.

    >>> _scenario_name("Sepsis-3 onset")
    'sepsis_3_onset'
    """
    cleaned = "".join(c if c.isalnum() else "_" for c in outcome.lower()).strip("_")
    return "_".join(part for part in cleaned.split("_") if part)[:64] or "outcome"


def labels_to_truth(labels: Iterable[OutcomeLabel], run_id: str = "labels") -> list[GroundTruth]:
    """Dataset outcome labels (e.g. PhysioNet SepsisLabel, one per hour) as episodes.

    Each run of consecutive positive labels of one patient and outcome is one episode from
    its first positive label's time to its last's; a patient whose labels never turn
    positive has none (their alerts count as false alarms).

    >>> from datetime import UTC
    >>> from schemas.common import SourceInfo
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> def lab(h, v): return OutcomeLabel(patient_id="p1", observed_at=t0 + timedelta(hours=h),
    ...     received_at=t0, source=SourceInfo(adapter="replay"), outcome="sepsis", label=v,
    ...     label_source="physionet2019")
    >>> [(g.onset.hour, g.end.hour) for g in labels_to_truth([lab(h, 3 <= h <= 5 or h == 8)
    ...     for h in range(10)])]
    [(3, 5), (8, 8)]
    """
    by_stream: dict[tuple[str, str], list[OutcomeLabel]] = {}
    for label in labels:
        by_stream.setdefault((label.patient_id, label.outcome), []).append(label)
    truth: list[GroundTruth] = []
    for (patient, outcome), stream in sorted(by_stream.items()):
        stream.sort(key=lambda lab: lab.observed_at)
        run: list[OutcomeLabel] = []
        for item in [*stream, None]:
            if item is not None and item.label:
                run.append(item)
                continue
            # a negative label or the end of the stream closes a run of positives
            if run:
                truth.append(
                    GroundTruth(
                        run_id=run_id,
                        patient_id=patient,
                        scenario=_scenario_name(outcome),
                        onset=run[0].observed_at,
                        end=run[-1].observed_at,
                        description=f"{outcome} label ({run[0].label_source})",
                    )
                )
                run = []
    return truth


def _json_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield number, line
    except OSError as exc:
        raise EvaluationInputError(f"{path}: cannot read ({exc})") from exc


def _error(path: Path, number: int, what: str, exc: ValidationError | ValueError) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{path}: line {number}: not {what}: {where}: {first.get('msg')}"
    return f"{path}: line {number}: not {what}: {exc}"


def load_truth(
    path: Path, *, start: datetime | None = None, patients: int | None = None
) -> tuple[list[GroundTruth], str]:
    """Ground truth from a file, and what kind of file it was.

    Accepts JSON lines of GroundTruth (``vigil simulate --truth``) or of OutcomeLabel
    context events (dataset labels), or a PhysioNet 2019 dataset (its SepsisLabel
    column, read by the replay's reader, anchored at ``start`` as ``vigil replay --start``
    was: default the replay's default; ``patients`` = its first N patients, as
    ``vigil replay --patients``). Any line that is neither is an error naming it.
    """
    if path.is_dir() or path.name.endswith((".tar.gz", ".tgz")):
        return (
            _dataset_truth(path, start, patients),
            "dataset labels (PhysioNet 2019 SepsisLabel)",
        )
    truth: list[GroundTruth] = []
    labels: list[OutcomeLabel] = []
    for number, line in _json_lines(path):
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise EvaluationInputError(f"{path}: line {number}: not JSON ({exc})") from exc
        try:
            if isinstance(obj, dict) and obj.get("kind") == "outcome_label":
                labels.append(OutcomeLabel.model_validate(obj))
            else:
                truth.append(GroundTruth.model_validate(obj))
        except ValidationError as exc:
            what = "an OutcomeLabel" if isinstance(obj, dict) and "kind" in obj else "GroundTruth"
            raise EvaluationInputError(_error(path, number, what, exc)) from exc
    if truth and labels:
        raise EvaluationInputError(f"{path}: mixes GroundTruth and OutcomeLabel lines")
    if labels:
        return labels_to_truth(labels, run_id=path.stem[:64] or "labels"), "outcome labels"
    if not truth:
        raise EvaluationInputError(f"{path}: no ground truth in it")
    return truth, "simulator annotations"


def _dataset_truth(path: Path, start: datetime | None, patients: int | None) -> list[GroundTruth]:
    from schemas.context import ContextEvent
    from services.replay.common import DEFAULT_START
    from services.replay.source import UnknownSourceError, open_source

    try:
        opened = open_source(path, start=start or DEFAULT_START, patients=patients)
    except UnknownSourceError as exc:
        raise EvaluationInputError(str(exc)) from exc
    labels = [
        r.payload.root
        for r in opened.records
        if isinstance(r.payload, ContextEvent) and isinstance(r.payload.root, OutcomeLabel)
    ]
    if not labels:
        raise EvaluationInputError(f"{path}: the dataset has no outcome labels")
    return labels_to_truth(labels, run_id=path.name.split(".")[0][:64] or "dataset")


def load_alerts(path: Path) -> list[AlertEvent]:
    """Alert events from JSON lines (``vigil alerts tail --json``); a bad line is an error."""
    alerts: list[AlertEvent] = []
    for number, line in _json_lines(path):
        try:
            alerts.append(AlertEvent.model_validate_json(line))
        except ValidationError as exc:
            if b'"invalid_alert_record"' in line:
                raise EvaluationInputError(
                    f"{path}: line {number}: a record of the alerts topic that is not an alert"
                    " event (printed by `vigil alerts tail --json` as invalid_alert_record)"
                ) from exc
            raise EvaluationInputError(_error(path, number, "an AlertEvent", exc)) from exc
    return alerts


# --- more scores: per rule, per priority, alarm intervals ---------------------------------


@dataclass(frozen=True)
class RuleStats:
    rule_id: str
    priority: str
    kind: str
    starts: int
    true_starts: int  # in a window of an episode this rule is expected to detect
    episodes: int  # episodes of the scenario kinds this rule is expected to detect
    detected: int  # of those, detected by a start of this rule

    @property
    def ppv(self) -> float | None:
        return self.true_starts / self.starts if self.starts else None

    @property
    def sensitivity(self) -> float | None:
        return self.detected / self.episodes if self.episodes else None


def _expected_for(rule_id: str, scenario: str) -> bool:
    prefixes = expected_prefixes(scenario)
    return prefixes is not None and rule_id.startswith(prefixes)


def rule_stats(truth: Sequence[GroundTruth], alerts: Iterable[AlertEvent]) -> list[RuleStats]:
    """Sensitivity and PPV of each rule that raised an alert or is expected to.

    A start is *true* when it falls in the window (see :func:`score_alerts`) of an episode of
    its patient that the rule is expected to detect; PPV = true starts / starts. A rule's
    sensitivity = episodes it is expected to detect that one of its starts fell into /
    all such episodes.
    """
    starts = [a for a in alerts if a.phase is AlertPhase.START]
    rules: dict[str, tuple[str, str]] = {a.rule_id: (a.priority.value, a.kind) for a in starts}
    windows = [(t, *_window(t)) for t in truth if expected_prefixes(t.scenario) is not None]
    out: list[RuleStats] = []
    for rule_id, (priority, kind) in sorted(rules.items()):
        mine = [a for a in starts if a.rule_id == rule_id]
        relevant = [(t, lo, hi) for t, lo, hi in windows if _expected_for(rule_id, t.scenario)]
        true_starts = sum(
            any(
                t.patient_id == a.patient_id and lo <= a.triggered_at <= hi
                for t, lo, hi in relevant
            )
            for a in mine
        )
        detected = sum(
            any(a.patient_id == t.patient_id and lo <= a.triggered_at <= hi for a in mine)
            for t, lo, hi in relevant
        )
        out.append(
            RuleStats(rule_id, priority, kind, len(mine), true_starts, len(relevant), detected)
        )
    return out


@dataclass(frozen=True)
class AlarmInterval:
    """One alert from its start to its end (None: still active when the file ends)."""

    alert_id: str
    patient_id: str
    bed: str | None
    rule_id: str
    priority: str
    kind: str
    start: datetime
    end: datetime | None
    escalated: bool


def alarm_intervals(alerts: Iterable[AlertEvent]) -> list[AlarmInterval]:
    """Each alert's start..end in event time (triggering sample times), by alert id."""
    by_id: dict[str, list[AlertEvent]] = {}
    for a in alerts:
        by_id.setdefault(a.alert_id, []).append(a)
    out: list[AlarmInterval] = []
    for alert_id, events in by_id.items():
        events.sort(key=lambda e: e.sequence)
        first = events[0]
        ends = [e.triggered_at for e in events if e.phase is AlertPhase.END]
        out.append(
            AlarmInterval(
                alert_id=alert_id,
                patient_id=first.patient_id,
                bed=first.bed,
                rule_id=first.rule_id,
                priority=max(
                    (e.priority for e in events), key=("low", "medium", "high").index
                ).value,
                kind=first.kind,
                start=first.triggered_at,
                end=ends[-1] if ends else None,
                escalated=any(e.phase is AlertPhase.ESCALATE for e in events),
            )
        )
    return sorted(out, key=lambda i: (i.patient_id, i.start))


def starts_per_bed_day_by_priority(
    truth: Sequence[GroundTruth], alerts: Iterable[AlertEvent], *, beds: int, run_s: float
) -> dict[str, dict[str, float]]:
    """Alert starts per bed-day by priority (technical alarms apart), true vs false.

    A start is true when it lies in a clinical episode window of its patient (as in
    :func:`score_alerts`); technical alarms are all counted under ``technical``.
    """
    bed_days = beds * run_s / 86400.0
    windows = [(t.patient_id, *_window(t)) for t in truth if expected_prefixes(t.scenario)]
    out: dict[str, dict[str, float]] = {
        p: {"true": 0.0, "false": 0.0} for p in ("high", "medium", "low", "technical")
    }
    for a in alerts:
        if a.phase is not AlertPhase.START:
            continue
        group = "technical" if a.kind == "technical" else a.priority.value
        inside = any(p == a.patient_id and lo <= a.triggered_at <= hi for p, lo, hi in windows)
        out[group]["true" if inside else "false"] += 1
    if bed_days > 0:
        for counts in out.values():
            for k in counts:
                counts[k] /= bed_days
    return out
