"""``vigil evaluate physionet`` end to end on a real broker, as the issue runs it on data
not in shared/: a few set A patients replayed through the worker and the risk agent,
twice. Both runs print the same figures (replay is deterministic), the results file has
the model's and every baseline's, every patient was learned, and the run's topics are
gone afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from tests.support.stack import Stack, unique_prefix

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PHYSIONET = DATA / "physionet2019" / "setA.psv.tar.gz"
PATIENTS = 60
SCORED = ("model", "qsofa_ge_2", "news2_ge_5", "news2_known_ge_5", "sofa_rise_ge_2")
FIGURES = ("utility", "auroc", "auprc", "alerts_per_patient_day", "rows", "rows_without_prediction")

pytestmark = pytest.mark.skipif(not PHYSIONET.exists(), reason="../shared/data not present")


def evaluate(stack: Stack, results: Path) -> dict[str, object]:
    done = stack.vigil(
        "evaluate",
        "physionet",
        str(PHYSIONET),
        "--patients",
        str(PATIENTS),
        "--results",
        str(results),
        "--timeout",
        "300",
        timeout_s=420,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "utility" in done.stdout
    assert "sofa_rise_ge_2" in done.stdout
    figures: dict[str, object] = json.loads(results.read_text())
    return figures


def topics(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def test_evaluate_physionet_scores_the_model_and_baselines_the_same_twice(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, tmp_path, unique_prefix("eval"))
    first = evaluate(stack, tmp_path / "first.json")
    second = evaluate(stack, tmp_path / "second.json")
    for figures in (first, second):
        prefix = str(figures["topic_prefix"])
        assert not {t for t in topics(kafka_bootstrap) if t.startswith(prefix)}
        assert isinstance(figures["topics_deleted"], int)
        assert figures["topics_deleted"] >= 10
        assert figures["risk_messages"] == figures["feature_snapshots"]
        assert isinstance(figures["feature_snapshots"], int)
        assert figures["feature_snapshots"] > 0
        # every patient's labels joined and learned (the last ones once the worker drained)
        assert figures["patients_never_learned"] == 0
        assert isinstance(figures["rows_learned_online"], int)
        assert figures["rows_learned_online"] > 0
    rows = first["model"]
    assert isinstance(rows, dict)
    assert rows["patients"] == PATIENTS
    assert rows["septic_patients"] >= 1
    for name in SCORED:
        a, b = first[name], second[name]
        assert isinstance(a, dict)
        assert isinstance(b, dict)
        assert {k: a[k] for k in FIGURES} == {k: b[k] for k in FIGURES}, name
    assert first["risk_messages"] == second["risk_messages"]
    assert first["rows_learned_online"] == second["rows_learned_online"]
