"""The risk agent's record handling without Kafka, and the benchmark's row alignment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.common import SourceInfo
from schemas.context import Admission, ContextEvent, Discharge, OutcomeLabel
from schemas.derived import FeatureSnapshot, FeatureValue, RiskScore
from services.config import Settings
from services.physionet_eval import merge_predictions
from services.risk_agent import RiskAgent
from streams.features.catalog import FEATURES
from streams.risk.engine import EngineConfig

T0 = datetime(2030, 1, 1, tzinfo=UTC)
SRC = SourceInfo(adapter="test", device_id="t")
PHYSIONET = Path(__file__).resolve().parents[3] / "shared/data/physionet2019/setA.psv.tar.gz"


def snapshot(pid: str, hours: float, hr: float) -> bytes:
    at = T0 + timedelta(hours=hours)
    features = {
        name: FeatureValue(value=hr if name == "heart_rate_per_min" else None, unit=spec.unit)
        for name, spec in FEATURES.items()
    }
    snap = FeatureSnapshot(
        patient_id=pid,
        computed_at=at,
        features=features,
        organs={},
        sofa_known_organs=0,
        completeness={},
    )
    return snap.model_dump_json().encode()


def context(event: object) -> bytes:
    return ContextEvent(event).model_dump_json().encode()


def label(pid: str, at: datetime, y: bool, received_at: datetime | None = None) -> bytes:
    """A PhysioNet-style sepsis label of ``pid`` for the hour at ``at``."""
    return context(
        OutcomeLabel(
            patient_id=pid,
            observed_at=at,
            received_at=received_at or at,
            source=SRC,
            outcome="sepsis",
            label=y,
            label_source="t",
        )
    )


def agent(tmp_path: Path) -> RiskAgent:
    return RiskAgent(
        Settings(),
        EngineConfig(outcome="sepsis", min_learned=1, min_positives=1),
        tmp_path / "ck",
    )


def test_discharge_read_before_the_last_snapshots_waits_for_them(tmp_path: Path) -> None:
    a = agent(tmp_path)
    a.handle_context(
        0,
        context(
            Admission(patient_id="p1", observed_at=T0, received_at=T0, source=SRC, age_years=70)
        ),
    )
    # the replay's context arrives before the worker's snapshots of the same hours
    for h in (1, 2, 3):
        at = T0 + timedelta(hours=h)
        a.handle_context(0, label("p1", at, h == 3))
    end = T0 + timedelta(hours=3)
    a.handle_context(
        0, context(Discharge(patient_id="p1", observed_at=end, received_at=end, source=SRC))
    )
    scores = [a.handle_snapshot(0, snapshot("p1", h, 80 + 10 * h)) for h in (1, 2, 3)]
    assert all(isinstance(s, RiskScore) for s in scores)
    assert a.engine.model.learned == 0  # the discharge is still held: nothing learned yet
    x = a.engine.patients["p1"].features.vector(end.timestamp())
    assert x["age_years"] == 70
    assert x["hours_since_admission"] == 3
    # a snapshot of another patient of the partition, later in event time, releases it
    a.handle_snapshot(0, snapshot("p2", 4, 90))
    assert a.engine.model.learned == 3
    assert "p1" not in a.engine.patients


def test_idle_flush_releases_held_context(tmp_path: Path) -> None:
    a = agent(tmp_path)
    a.handle_snapshot(1, snapshot("p9", 1, 100))
    a.handle_context(1, label("p9", T0 + timedelta(hours=1), True, received_at=T0))
    end = T0 + timedelta(hours=1)
    a.handle_context(
        1, context(Discharge(patient_id="p9", observed_at=end, received_at=end, source=SRC))
    )
    assert a.engine.model.learned == 0
    a.flush_held()
    assert a.engine.model.learned == 1


def test_checkpoint_round_trip_through_the_agent(tmp_path: Path) -> None:
    a = agent(tmp_path)
    a.handle_snapshot(0, snapshot("p1", 1, 100))
    a.engine.positions["features:0"] = 7
    a.save()
    b = agent(tmp_path)
    assert b.engine.positions == {"features:0": 7}
    assert b.engine.model_version == a.engine.model_version
    assert "p1" in b.engine.patients


def test_context_held_at_a_checkpoint_is_applied_after_a_restart(tmp_path: Path) -> None:
    """Held context was consumed (its offsets are in the checkpoint): it must be saved."""
    a = agent(tmp_path)
    end = T0 + timedelta(hours=2)
    a.handle_context(
        0,
        context(
            Admission(patient_id="p1", observed_at=T0, received_at=T0, source=SRC, age_years=64)
        ),
    )
    a.handle_context(0, label("p1", T0, False))
    a.handle_context(
        0, context(Discharge(patient_id="p1", observed_at=end, received_at=end, source=SRC))
    )
    a.save()  # the worker's snapshots of p1 are not there yet: both events still held
    b = agent(tmp_path)
    b.handle_snapshot(0, snapshot("p1", 1, 88))  # releases the admission only
    assert (
        b.engine.patients["p1"].features.vector((T0 + timedelta(hours=1)).timestamp())["age_years"]
        == 64
    )
    assert b.engine.model.learned == 0
    b.handle_snapshot(0, snapshot("p2", 3, 90))  # past the discharge: p1 is joined, learned
    assert b.engine.model.learned == 1
    assert "p1" not in b.engine.patients


def test_held_context_is_released_in_event_time_whatever_its_arrival_order(
    tmp_path: Path,
) -> None:
    a = agent(tmp_path)
    hours = [5, 1, 4, 2, 3]
    for n, h in enumerate(hours):
        at = T0 + timedelta(hours=h)
        a.handle_context(
            0,
            context(Admission(patient_id=f"p{n}", observed_at=at, received_at=at, source=SRC)),
        )
    applied: list[str] = []
    a.engine.on_admission = lambda pid, *_args: applied.append(pid)  # type: ignore[method-assign]
    a.handle_snapshot(0, snapshot("q", 3.5, 80))
    assert applied == ["p1", "p3", "p4"]  # hours 1, 2, 3
    a.flush_held()
    assert applied == ["p1", "p3", "p4", "p2", "p0"]


def test_each_row_takes_the_last_prediction_before_the_next_row() -> None:
    hour = 3600.0
    rows = {"p": ([0.0, hour, 2 * hour], [False, False, True])}
    preds = {"p": [(0.0, 0.1, 0.5), (10.0, 0.2, 0.5), (2 * hour + 5, 0.9, 0.5)]}
    scores = merge_predictions(rows, preds, None)
    assert list(scores.scores[0]) == [0.2, 0.2, 0.9]  # hour 1 published nothing: hour 0's
    assert list(scores.decisions[0]) == [False, False, True]
    assert (scores.rows_without_prediction, scores.rows_carried_forward) == (0, 1)
    fixed = merge_predictions(rows, preds, threshold=0.15)
    assert list(fixed.decisions[0]) == [True, True, True]
    late = merge_predictions(rows, {"p": [(hour + 1, 0.3, 0.5)]}, None)
    assert list(late.scores[0]) == [0.0, 0.3, 0.3]  # before the first prediction: none
    assert late.rows_without_prediction == 1


def test_model_export_then_import_warm_starts_another_site(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from services.cli_risk import model_group
    from streams.risk.engine import loads

    site_a = agent(tmp_path / "a")
    for h in range(1, 4):
        site_a.handle_snapshot(0, snapshot("p1", h, 90 + h))
    site_a.engine.on_label("p1", "sepsis", (T0 + timedelta(hours=1)).timestamp(), True)
    site_a.engine.on_discharge("p1", (T0 + timedelta(hours=3)).timestamp())
    site_a.save()
    site_b = tmp_path / "b.ckpt"
    agent_b = RiskAgent(Settings(), EngineConfig(outcome="sepsis"), site_b)
    agent_b.engine.positions["features:0"] = 42
    later = T0 + timedelta(hours=5)
    agent_b.handle_context(  # consumed, not yet applied: must survive the import
        0, context(Discharge(patient_id="p7", observed_at=later, received_at=later, source=SRC))
    )
    agent_b.save()
    runner = CliRunner()
    out = tmp_path / "a.model"
    done = runner.invoke(
        model_group, ["export", str(out), "--checkpoint", str(tmp_path / "a" / "ck")]
    )
    assert done.exit_code == 0, done.output
    exported = loads(out.read_bytes())
    assert exported.patients == {}  # no patient state leaves the site
    assert exported.model.learned == 3
    done = runner.invoke(model_group, ["import", str(out), "--checkpoint", str(site_b)])
    assert done.exit_code == 0, done.output
    restored_agent = RiskAgent(Settings(), EngineConfig(outcome="sepsis"), site_b)
    restored = restored_agent.engine
    assert restored.model_version == site_a.engine.model_version
    assert restored.positions == {"features:0": 42}  # site B keeps its own read positions
    assert [e.patient_id for _at, _seq, e in restored_agent.held[0].events] == ["p7"]
    wrong = runner.invoke(
        model_group,
        ["import", str(out), "--outcome", "mods_progression_6h", "--checkpoint", str(site_b)],
    )
    assert wrong.exit_code != 0


@pytest.mark.skipif(not PHYSIONET.exists(), reason="../shared/data not present")
def test_evaluate_refuses_to_score_patients_it_pretrained_on_before_starting_anything() -> None:
    from click.testing import CliRunner

    from services.cli_risk import evaluate_physionet

    done = CliRunner().invoke(
        evaluate_physionet,
        [str(PHYSIONET), "--pretrain", str(PHYSIONET), "--pretrain-ids", "-p000020"],
        env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},  # never reached
    )
    assert done.exit_code == 1
    assert "20 patients (e.g. p000001) are both pretrained on and evaluated" in done.output
