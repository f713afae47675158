"""The alert evaluation report from a small, hand-checked fixture: scores, PNGs, HTML, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from schemas.alerts import AlertEvent
from schemas.annotations import GroundTruth
from schemas.common import SourceInfo
from schemas.context import ContextEvent, OutcomeLabel
from schemas.derived import RiskScore
from services.cli_evaluate import evaluate_alerts
from services.evaluation import (
    EvaluationInputError,
    alarm_intervals,
    load_alerts,
    load_truth,
    rule_stats,
    starts_per_bed_day_by_priority,
)
from services.report.alerts import write_alert_report

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def truth() -> list[GroundTruth]:
    def gt(patient: str, bed: str, scenario: str, onset: float, end: float) -> GroundTruth:
        return GroundTruth(
            run_id="r1",
            patient_id=patient,
            bed=bed,
            scenario=scenario,
            onset=at(onset),
            end=at(end),
        )

    return [
        gt("p1", "ICU1-01", "hypotension", 10, 30),
        gt("p2", "ICU1-02", "cerebral_desaturation", 20, 40),
        gt("p3", "ICU1-03", "hypotension", 5, 25),  # missed
    ]


def alert(
    patient: str, rule: str, phase: str, minute: float, seq: int = 0, priority: str = "medium"
) -> AlertEvent:
    kind = "technical" if rule.startswith("technical.") else "physiological"
    return AlertEvent(
        event_id=f"{patient}-{rule}-{seq}",
        alert_id=f"{patient}-{rule}",
        sequence=seq,
        patient_id=patient,
        bed=f"ICU1-0{patient[-1]}",
        phase=phase,
        priority=priority,
        kind=kind,
        rule_id=rule,
        rule_version=1,
        title=rule,
        values={"x": 1.0},
        thresholds={"x": 2.0},
        condition_since=at(minute - 1),
        triggered_at=at(minute),
        raised_at=at(minute),
        explanation=("trace",),
        source="CLINICAL.md",
    )


def alerts() -> list[AlertEvent]:
    return [
        alert("p1", "perfusion.map_low", "start", 14),  # hypotension p1: 4 min
        alert("p1", "perfusion.map_low", "escalate", 20, 1, "high"),
        alert("p1", "perfusion.map_low", "end", 33, 2, "high"),
        alert("p2", "brain.rso2_low", "start", 21),  # cerebral p2: 1 min
        alert("p2", "perfusion.map_low", "start", 25),  # not expected for cerebral: false
        alert("p4", "perfusion.shock_index_high", "start", 50, priority="low"),  # false
        alert("p3", "technical.vitals_no_data", "start", 60),
    ]


def test_rule_stats_count_true_starts_and_detected_episodes() -> None:
    stats = {s.rule_id: s for s in rule_stats(truth(), alerts())}
    map_low = stats["perfusion.map_low"]
    assert (map_low.starts, map_low.true_starts, map_low.episodes, map_low.detected) == (2, 1, 2, 1)
    assert map_low.ppv == 0.5
    assert map_low.sensitivity == 0.5
    rso2 = stats["brain.rso2_low"]
    assert (rso2.ppv, rso2.sensitivity) == (1.0, 1.0)
    shock = stats["perfusion.shock_index_high"]
    assert (shock.ppv, shock.sensitivity) == (0.0, 0.0)
    assert stats["technical.vitals_no_data"].sensitivity is None  # no device_disconnect truth


def test_rates_by_priority_and_alarm_intervals() -> None:
    rates = starts_per_bed_day_by_priority(truth(), alerts(), beds=4, run_s=6 * 3600)
    # one bed-day = 4 beds x 6 h. A start in any clinical episode of its patient is not a
    # false alarm (score_alerts' definition), even of a rule not expected for it (p2 map)
    assert rates["medium"] == {"true": 3.0, "false": 0.0}
    assert rates["low"] == {"true": 0.0, "false": 1.0}
    assert rates["technical"] == {"true": 0.0, "false": 1.0}
    assert rates["high"] == {"true": 0.0, "false": 0.0}
    intervals = {i.alert_id: i for i in alarm_intervals(alerts())}
    p1 = intervals["p1-perfusion.map_low"]
    assert (p1.start, p1.end, p1.priority, p1.escalated) == (at(14), at(33), "high", True)
    assert intervals["p2-brain.rso2_low"].end is None


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_report_writes_html_pngs_and_scores(tmp_path: Path) -> None:
    risk = [
        RiskScore(
            patient_id=p,
            computed_at=at(m),
            outcome="mods",
            horizon_h=0.25,
            probability=prob,
            model_id="m",
            model_version="1",
            cold_start=False,
        )
        for p, m, prob in [
            ("p1", 0, 0.7),
            ("p1", 50, 0.2),
            ("p2", 15, 0.6),
            ("p2", 60, 0.1),
            ("p3", 10, 0.3),
            ("p4", 30, 0.4),
        ]
    ]
    page = write_alert_report(tmp_path / "rep", truth(), alerts(), risk=risk, beds=4, hours=6)
    html = page.read_text()
    for png in (
        "timeline_1.png",
        "lead_time.png",
        "alarms_per_bed_day.png",
        "rules.png",
        "roc_mods.png",
        "calibration_mods.png",
    ):
        data = (tmp_path / "rep" / png).read_bytes()
        assert data.startswith(PNG), png
        assert f'src="{png}"' in html
    assert "http://" not in html
    assert "https://" not in html
    scores = json.loads((tmp_path / "rep" / "scores.json").read_text())
    assert scores["scenarios"]["hypotension"]["sensitivity"] == 0.5
    assert scores["scenarios"]["hypotension"]["time_to_alert_s_median"] == 240.0
    assert scores["bed_days"] == 1.0
    # p1@0 (onset 10 within 15 min) +, p1@50 -, p2@15 (onset 20) +, p2@60 -, p3@10 +, p4 -
    assert scores["risk"]["mods"]["predictions"] == 6
    assert scores["risk"]["mods"]["auroc"] == pytest.approx(8 / 9)


def test_truth_from_outcome_labels_and_bad_lines_named(tmp_path: Path) -> None:
    def label(hour: int, value: bool) -> str:
        return ContextEvent(
            OutcomeLabel(
                patient_id="p9",
                observed_at=T0 + timedelta(hours=hour),
                received_at=T0,
                source=SourceInfo(adapter="replay"),
                outcome="sepsis",
                label=value,
                label_source="physionet2019",
            )
        ).model_dump_json()

    labels = write_lines(tmp_path / "labels.jsonl", [label(h, h >= 5) for h in range(8)])
    episodes, kind = load_truth(labels)
    assert kind == "outcome labels"
    assert [(e.scenario, e.onset, e.end) for e in episodes] == [
        ("sepsis", T0 + timedelta(hours=5), T0 + timedelta(hours=7))
    ]
    good = alerts()[0].model_dump_json()
    bad_json = write_lines(tmp_path / "a.jsonl", [good, "{not json"])
    with pytest.raises(EvaluationInputError, match=r"a.jsonl: line 2: not an AlertEvent"):
        load_alerts(bad_json)
    invalid = write_lines(tmp_path / "b.jsonl", [good, good, '{"invalid_alert_record": "x"}'])
    with pytest.raises(EvaluationInputError, match="line 3: a record of the alerts topic"):
        load_alerts(invalid)
    with pytest.raises(EvaluationInputError, match=r"labels2.jsonl: line 1: not GroundTruth"):
        load_truth(write_lines(tmp_path / "labels2.jsonl", ['{"patient_id": "p1"}']))


def test_cli_writes_the_report_and_refuses_bad_input(tmp_path: Path) -> None:
    truth_file = write_lines(tmp_path / "truth.jsonl", [t.model_dump_json() for t in truth()])
    alerts_file = write_lines(tmp_path / "alerts.jsonl", [a.model_dump_json() for a in alerts()])
    runner = CliRunner()
    out = tmp_path / "report"
    result = runner.invoke(
        evaluate_alerts,
        [
            "--truth",
            str(truth_file),
            "--alerts",
            str(alerts_file),
            "--out",
            str(out),
            "--beds",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "index.html").exists()
    assert (out / "rules.png").read_bytes().startswith(PNG)
    broken = write_lines(tmp_path / "broken.jsonl", ["garbage"])
    result = runner.invoke(
        evaluate_alerts, ["--truth", str(truth_file), "--alerts", str(broken), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert "broken.jsonl: line 1" in result.output
