"""The PhysioNet 2019 normalised utility against the golden values of set A (CLINICAL.md)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from streams.risk.utility import (
    auprc,
    auroc,
    best_predictions,
    normalised_utility,
    patient_utility,
)

SET_A = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "physionet2019" / "setA.psv.tar.gz"
)


@pytest.fixture(scope="module")
def set_a_labels() -> list[NDArray[np.bool_]]:
    if not SET_A.exists():
        pytest.fail(f"PhysioNet set A not found at {SET_A}")
    labels = []
    with tarfile.open(SET_A, "r|gz") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".psv"):
                handle = archive.extractfile(member)
                assert handle is not None
                rows = handle.read().decode().splitlines()[1:]
                labels.append(np.array([row.rsplit("|", 1)[1] == "1" for row in rows]))
    assert len(labels) == 20336
    return labels


def test_golden_all_zero_is_zero(set_a_labels: list[NDArray[np.bool_]]) -> None:
    zeros = [np.zeros(len(y)) for y in set_a_labels]
    assert normalised_utility(set_a_labels, zeros) == 0.0


def test_golden_all_one(set_a_labels: list[NDArray[np.bool_]]) -> None:
    ones = [np.ones(len(y)) for y in set_a_labels]
    assert normalised_utility(set_a_labels, ones) == pytest.approx(-0.31052, abs=5e-6)


def test_golden_predicting_the_label(set_a_labels: list[NDArray[np.bool_]]) -> None:
    assert normalised_utility(set_a_labels, set_a_labels) == pytest.approx(0.86893, abs=5e-6)


def test_best_predictions_score_one(set_a_labels: list[NDArray[np.bool_]]) -> None:
    sample = set_a_labels[:2000]
    assert normalised_utility(sample, [best_predictions(y) for y in sample]) == pytest.approx(1.0)


def test_septic_patient_reward_shape_hour_by_hour() -> None:
    # first label at row 10 -> t_sepsis = 16; reward peaks at t_sepsis - 6 = 10
    labels = np.array([0] * 10 + [1] * 12)

    missed = np.zeros(len(labels), dtype=bool)

    def one_hot(t: int) -> float:  # what a single positive hour adds to predicting nothing
        p = np.zeros(len(labels), dtype=bool)
        p[t] = True
        return patient_utility(labels, p) - patient_utility(labels, missed)

    assert one_hot(4) == pytest.approx(0.0)  # t_sepsis - 12
    assert one_hot(2) == pytest.approx(-0.05)  # too early: floor
    assert one_hot(7) == pytest.approx(0.5)
    assert one_hot(10) == pytest.approx(1.0)
    assert one_hot(19) == pytest.approx(2.0)  # t_sepsis + 3: reward 0 instead of -2
    assert one_hot(21) == pytest.approx(0.0)  # after: not scored
    # missing: 0 until t_sepsis - 6, then down to -2 at t_sepsis + 3 (9 steps of -2/9)
    assert patient_utility(labels, missed) == pytest.approx(-2 / 9 * sum(range(1, 10)))


def test_non_septic_false_alarms_cost_005_each() -> None:
    assert patient_utility([0] * 5, [1, 0, 1, 1, 0]) == pytest.approx(-0.15)


def test_length_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ"):
        patient_utility([0, 1], [0])


def test_auroc_auprc_against_brute_force() -> None:
    rng = np.random.default_rng(4)
    y = rng.random(300) < 0.2
    s = np.round(rng.random(300) + 0.5 * y, 2)  # ties on purpose
    pairs = [(a, b) for a in s[y] for b in s[~y]]
    brute = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert auroc(y, s) == pytest.approx(brute)
    thresholds = np.unique(s)[::-1]
    ap, prev_recall = 0.0, 0.0
    for th in thresholds:
        hit = s >= th
        recall = (hit & y).sum() / y.sum()
        ap += (recall - prev_recall) * (hit & y).sum() / hit.sum()
        prev_recall = recall
    assert auprc(y, s) == pytest.approx(ap)
