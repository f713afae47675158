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

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas.alerts import AlertEvent, AlertPhase
from schemas.annotations import GroundTruth

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
        prefixes = EXPECTED_RULES.get(t.scenario)
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
    clinical_windows = [(t.patient_id, *_window(t)) for t in truth if t.scenario in EXPECTED_RULES]
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
