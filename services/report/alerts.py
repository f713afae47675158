"""The alert evaluation report: alerts against ground truth, as PNG plots and one HTML page.

Scores come from :mod:`services.evaluation` (the one scorer); this module only draws and
lays them out. :func:`write_alert_report` is what ``vigil evaluate alerts`` calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from schemas.alerts import AlertEvent
from schemas.annotations import GroundTruth
from schemas.derived import RiskScore
from services.evaluation import (
    AlarmInterval,
    RuleStats,
    alarm_intervals,
    expected_prefixes,
    rule_stats,
    score_alerts,
    starts_per_bed_day_by_priority,
)
from services.report.html import HtmlReport
from services.report.plots import _save, calibration_png, roc_png

PRIORITY_COLOURS = {
    "high": "#d62728",  # IEC 60601-1-8: red
    "medium": "#f2b600",  # yellow
    "low": "#17becf",  # cyan
    "technical": "#7f7f7f",
}
ROWS_PER_TIMELINE = 30


@dataclass(frozen=True)
class RunExtent:
    """The run being scored: beds and event-time span (for rates per bed-day)."""

    start: datetime
    end: datetime
    beds: int
    beds_inferred: bool

    @property
    def seconds(self) -> float:
        return max((self.end - self.start).total_seconds(), 1.0)


def run_extent(
    truth: Sequence[GroundTruth],
    alerts: Sequence[AlertEvent],
    *,
    beds: int | None = None,
    hours: float | None = None,
) -> RunExtent:
    """The run: from the first annotated onset or alert to the last (annotated ends are
    left out: a scenario may be scripted to end after the run stopped), or ``hours`` long;
    beds = patients seen, unless given (a bed with neither alerts nor annotations is
    otherwise not counted)."""
    times = [t.onset for t in truth] + [a.triggered_at for a in alerts]
    if not times:
        raise ValueError("neither ground truth nor alerts: nothing to evaluate")
    start, end = min(times), max(times)
    if hours is not None:
        end = start + timedelta(hours=hours)
    patients = {t.patient_id for t in truth} | {a.patient_id for a in alerts}
    return RunExtent(start, end, beds or len(patients), beds is None)


def _hours(at: datetime, extent: RunExtent) -> float:
    return (at - extent.start).total_seconds() / 3600.0


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60.0


def _group(kind: str, priority: str) -> str:
    """Priority colour group: technical alarms apart."""
    return "technical" if kind == "technical" else priority


def _bed_labels(truth: Sequence[GroundTruth], alerts: Sequence[AlertEvent]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for patient, bed in [(t.patient_id, t.bed) for t in truth] + [
        (a.patient_id, a.bed) for a in alerts
    ]:
        if bed and patient not in labels:
            labels[patient] = bed
    return labels


def timeline_pngs(
    out_dir: Path,
    truth: Sequence[GroundTruth],
    intervals: Sequence[AlarmInterval],
    extent: RunExtent,
    beds: dict[str, str],
) -> list[str]:
    """Per-patient rows: annotated episodes (shaded) and alarms (bars by priority, from the
    triggering sample of the start to that of the end); several PNGs when rows are many."""
    patients = sorted(
        {t.patient_id for t in truth} | {i.patient_id for i in intervals},
        key=lambda p: (beds.get(p, "~"), p),
    )
    scenarios = sorted({t.scenario for t in truth})
    cmap = plt.get_cmap("tab10")
    scenario_colour = {s: cmap(i % 10) for i, s in enumerate(scenarios)}
    names: list[str] = []
    for page, first in enumerate(range(0, len(patients), ROWS_PER_TIMELINE), 1):
        rows = patients[first : first + ROWS_PER_TIMELINE]
        fig, ax = plt.subplots(figsize=(11, 1.2 + 0.42 * len(rows)))
        x0, x1 = 0.0, extent.seconds / 3600.0
        for y, patient in enumerate(rows):
            for t in truth:
                if t.patient_id != patient:
                    continue
                lo = _hours(t.onset, extent)
                hi = _hours(t.end, extent) if t.end is not None else x1
                ax.broken_barh(
                    [(lo, max(hi - lo, (x1 - x0) / 500))],
                    (y - 0.42, 0.84),
                    color=scenario_colour[t.scenario],
                    alpha=0.28,
                )
            mine = [i for i in intervals if i.patient_id == patient]
            for lane, interval in enumerate(mine):
                lo = _hours(interval.start, extent)
                hi = _hours(interval.end, extent) if interval.end is not None else x1
                colour = PRIORITY_COLOURS[_group(interval.kind, interval.priority)]
                offset = -0.3 + 0.6 * ((lane % 4) / 3)  # overlapping alarms on four lanes
                ax.broken_barh(
                    [(lo, max(hi - lo, (x1 - x0) / 800))],
                    (y + offset - 0.07, 0.14),
                    color=colour,
                )
                ax.plot([lo], [y + offset], marker="|", color="black", ms=7, mew=1)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{beds.get(p, '-')}  {p}" for p in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(x0, x1)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(f"Hours of event time since {extent.start.isoformat(timespec='seconds')}")
        handles = [
            Patch(color=scenario_colour[s], alpha=0.28, label=f"truth: {s}") for s in scenarios
        ] + [Patch(color=c, label=f"alarm: {p}") for p, c in PRIORITY_COLOURS.items()]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        title = "Alarms against ground truth"
        pages = (len(patients) + ROWS_PER_TIMELINE - 1) // ROWS_PER_TIMELINE
        ax.set_title(title if pages == 1 else f"{title} ({page}/{pages})")
        name = f"timeline_{page}.png"
        _save(fig, out_dir / name)
        names.append(name)
    return names


def lead_time_png(path: Path, episodes: Sequence[dict[str, Any]]) -> None:
    """Histogram of time to alert (minutes, first expected alarm - annotated onset)."""
    kinds = sorted({e["scenario"] for e in episodes})
    fig, ax = plt.subplots(figsize=(7, 4))
    data = [
        [
            e["time_to_alert_s"] / 60
            for e in episodes
            if e["scenario"] == k and e["time_to_alert_s"] is not None
        ]
        for k in kinds
    ]
    missed = {
        k: sum(1 for e in episodes if e["scenario"] == k and e["time_to_alert_s"] is None)
        for k in kinds
    }
    flat = [v for d in data for v in d]
    if flat:
        lo, hi = min([*flat, 0.0]), max([*flat, 1.0])
        edges = [float(e) for e in np.linspace(lo, hi, min(30, max(5, len(flat))) + 1)]
        ax.hist(
            [d for d in data],
            bins=edges,
            stacked=True,
            label=[
                f"{k} (detected {len(d)}, missed {missed[k]})"
                for k, d in zip(kinds, data, strict=True)
            ],
        )
        ax.axvline(0, color="black", lw=1, ls="--")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no episode was detected", ha="center", transform=ax.transAxes)
    ax.set(
        xlabel="Time to alert after annotated onset (min; < 0 = before onset)",
        ylabel="Episodes",
        title="Lead time",
    )
    ax.grid(alpha=0.3)
    _save(fig, path)


def per_bed_day_png(path: Path, rates: dict[str, dict[str, float]], extent: RunExtent) -> None:
    """Alarm starts per bed-day by priority, split into true and false alarms."""
    groups = list(rates)
    true = [rates[g]["true"] for g in groups]
    false = [rates[g]["false"] for g in groups]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(groups))
    ax.bar(x, true, color=[PRIORITY_COLOURS[g] for g in groups], label="in a truth episode")
    ax.bar(
        x,
        false,
        bottom=true,
        color=[PRIORITY_COLOURS[g] for g in groups],
        alpha=0.4,
        hatch="//",
        edgecolor="black",
        label="outside (false alarm)",
    )
    for xi, (t, f) in enumerate(zip(true, false, strict=True)):
        ax.text(xi, t + f, f"{t + f:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, groups)
    ax.set(
        ylabel="Alarm starts per bed-day",
        title=f"Alarms per bed-day ({extent.beds} beds x {extent.seconds / 3600:.1f} h)",
    )
    ax.legend(
        handles=[
            Patch(facecolor="#bbbbbb", label="in a truth episode"),
            Patch(
                facecolor="#bbbbbb",
                alpha=0.4,
                hatch="//",
                edgecolor="black",
                label="outside every episode (false alarm)",
            ),
        ],
        fontsize=8,
    )
    ax.set_ylim(0, max([t + f for t, f in zip(true, false, strict=True)] + [0.5]) * 1.18)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def rules_png(path: Path, stats: Sequence[RuleStats]) -> None:
    """Per rule: sensitivity (episodes it should detect) and PPV (its starts that were true)."""
    rules = [s.rule_id for s in stats]
    fig, (sens_ax, ppv_ax) = plt.subplots(
        1, 2, figsize=(11, 1.2 + 0.32 * max(len(rules), 1)), sharey=True
    )
    y = np.arange(len(rules))
    colours = [
        PRIORITY_COLOURS["technical" if s.kind == "technical" else s.priority] for s in stats
    ]
    for ax, values, counts, name in (
        (
            sens_ax,
            [s.sensitivity for s in stats],
            [f"{s.detected}/{s.episodes}" for s in stats],
            "Sensitivity (episodes detected)",
        ),
        (
            ppv_ax,
            [s.ppv for s in stats],
            [f"{s.true_starts}/{s.starts}" for s in stats],
            "PPV (starts in an expected episode)",
        ),
    ):
        ax.barh(y, [v or 0.0 for v in values], color=colours)
        for yi, (v, c) in enumerate(zip(values, counts, strict=True)):
            ax.text(
                0.01 if v is None else min(v, 0.85) + 0.01,
                yi,
                "n/a" if v is None else c,
                va="center",
                fontsize=7,
            )
        ax.set_xlim(0, 1.0)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    sens_ax.set_yticks(y, rules, fontsize=8)
    sens_ax.invert_yaxis()
    _save(fig, path)


def load_risk(path: Path) -> list[RiskScore]:
    from services.evaluation import EvaluationInputError, _error, _json_lines

    scores: list[RiskScore] = []
    for number, line in _json_lines(path):
        try:
            scores.append(RiskScore.model_validate_json(line))
        except ValueError as exc:
            raise EvaluationInputError(_error(path, number, "a RiskScore", exc)) from exc
    return scores


def risk_labels(
    truth: Sequence[GroundTruth], scores: Sequence[RiskScore]
) -> dict[str, tuple[list[int], list[float]]]:
    """Per outcome: (label, probability) of each prediction. A prediction is positive when
    an annotated episode of its patient is under way or starts within its horizon."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for s in scores:
        horizon = timedelta(hours=s.horizon_h or 0.0)
        positive = any(
            t.patient_id == s.patient_id
            and expected_prefixes(t.scenario) is not None
            and t.onset - horizon <= s.computed_at
            and (t.end is None or s.computed_at <= t.end)
            for t in truth
        )
        labels, probs = out.setdefault(s.outcome, ([], []))
        labels.append(int(positive))
        probs.append(s.probability)
    return out


def write_alert_report(
    out_dir: Path,
    truth: Sequence[GroundTruth],
    alerts: Sequence[AlertEvent],
    *,
    truth_kind: str = "ground truth",
    risk: Sequence[RiskScore] = (),
    beds: int | None = None,
    hours: float | None = None,
    title: str = "Vigil alert evaluation",
) -> Path:
    """Write ``index.html``, its PNGs and ``scores.json`` into ``out_dir``; returns the page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    extent = run_extent(truth, alerts, beds=beds, hours=hours)
    scores = score_alerts(truth, alerts, beds=extent.beds, run_s=extent.seconds)
    per_rule = rule_stats(truth, alerts)
    rates = starts_per_bed_day_by_priority(truth, alerts, beds=extent.beds, run_s=extent.seconds)
    intervals = alarm_intervals(alerts)
    page = HtmlReport(title)
    page.paragraph(
        f"{len(alerts)} alert events ({scores['alert_starts']} starts) against {len(truth)}"
        f" annotations ({truth_kind}); event time {extent.start.isoformat()} .. "
        f"{extent.end.isoformat()}; {extent.beds} beds"
        + (
            " (patients seen in the inputs; pass --beds for the ward size)"
            if extent.beds_inferred
            else ""
        )
        + f", {scores['bed_days']:.2f} bed-days."
    )
    page.heading("Detection by scenario")
    page.table(
        [
            "scenario",
            "episodes",
            "detected",
            "sensitivity",
            "median time to alert (min)",
            "max (min)",
            "detected by",
        ],
        [
            [
                k,
                v["episodes"],
                v["detected"],
                v["sensitivity"],
                _minutes(v["time_to_alert_s_median"]),
                _minutes(v["time_to_alert_s_max"]),
                ", ".join(v["detected_by"]),
            ]
            for k, v in scores["scenarios"].items()
        ],
    )
    page.paragraph(
        "An episode is detected when an alert of a rule family expected for its kind starts on"
        " the same patient from its onset to 30 min after its end; time to alert is measured"
        " from the annotated onset to the triggering sample of that alert.",
        note=True,
    )
    page.heading("Per-patient timeline")
    for name in timeline_pngs(out_dir, truth, intervals, extent, _bed_labels(truth, alerts)):
        page.figure(
            name,
            "Shaded: annotated episodes; bars: alarms from the triggering sample of their"
            " start to that of their end, coloured by priority (| = start).",
        )
    page.heading("Lead time")
    lead_time_png(out_dir / "lead_time.png", scores["episodes"])
    page.figure(
        "lead_time.png",
        "Time from annotated onset to the first expected alarm, per detected episode.",
    )
    page.heading("Alarm burden")
    per_bed_day_png(out_dir / "alarms_per_bed_day.png", rates, extent)
    page.figure(
        "alarms_per_bed_day.png",
        "Alarm starts per bed-day by priority; hatched: outside every clinical episode"
        " (false alarms).",
    )
    page.table(
        ["priority", "in an episode / bed-day", "false / bed-day"],
        [[g, r["true"], r["false"]] for g, r in rates.items()],
    )
    page.heading("Rules: sensitivity and PPV")
    rules_png(out_dir / "rules.png", per_rule)
    page.figure(
        "rules.png",
        "Per rule: share of the episodes it is expected to detect that it did, and share"
        " of its starts inside such an episode.",
    )
    page.table(
        [
            "rule",
            "priority",
            "starts",
            "true starts",
            "PPV",
            "episodes expected",
            "detected",
            "sensitivity",
        ],
        [
            [
                s.rule_id,
                "technical" if s.kind == "technical" else s.priority,
                s.starts,
                s.true_starts,
                s.ppv,
                s.episodes,
                s.detected,
                s.sensitivity,
            ]
            for s in per_rule
        ],
    )
    risk_results: dict[str, Any] = {}
    if risk:
        page.heading("Risk models")
        for outcome, (labels, probs) in sorted(risk_labels(truth, risk).items()):
            safe = "".join(c if c.isalnum() else "_" for c in outcome)
            if len(set(labels)) < 2:
                only = "positive" if labels and labels[0] else "negative"
                page.paragraph(f"{outcome}: {len(labels)} predictions, all {only}: no ROC.")
                continue
            auc = roc_png(out_dir / f"roc_{safe}.png", labels, probs, f"ROC: {outcome}")
            brier = calibration_png(
                out_dir / f"calibration_{safe}.png", labels, probs, title=f"Calibration: {outcome}"
            )
            risk_results[outcome] = {"predictions": len(labels), "auroc": auc, "brier": brier}
            page.paragraph(
                f"{outcome}: {len(labels)} predictions, {sum(labels)} positive; "
                f"AUROC {auc:.3f}, Brier {brier:.3f}."
            )
            page.figure(f"roc_{safe}.png", f"ROC of {outcome} risk")
            page.figure(f"calibration_{safe}.png", f"Calibration of {outcome} risk")
    summary = scores | {
        "rules": [s.__dict__ | {"ppv": s.ppv, "sensitivity": s.sensitivity} for s in per_rule],
        "alarms_per_bed_day_by_priority": rates,
        "risk": risk_results,
        "truth_kind": truth_kind,
        "beds_inferred": extent.beds_inferred,
    }
    (out_dir / "scores.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    page.paragraph("All numbers: scores.json in this folder.", note=True)
    return page.write(out_dir)
