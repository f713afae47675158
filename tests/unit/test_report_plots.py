"""The report's figures: ROC/AUROC and calibration numbers, and the PNGs they write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.report.plots import calibration_bins, calibration_png, roc_curve, roc_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    """P(score of a random positive > random negative), ties half: the AUROC's definition."""
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_auroc_equals_the_pairwise_probability_with_ties() -> None:
    rng = np.random.default_rng(11)
    y = (rng.random(400) < 0.25).astype(int)
    s = np.round(rng.random(400) * 0.6 + y * 0.3, 1)  # coarse: many ties
    _fpr, _tpr, auc = roc_curve(y, s)
    assert auc == pytest.approx(pairwise_auc(y, s), abs=1e-12)


def test_perfect_and_inverted_rankings() -> None:
    assert roc_curve([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[2] == 1.0
    assert roc_curve([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9])[2] == 0.0


def test_roc_refuses_one_class_and_bad_labels() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_curve([1, 1, 1], [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="0/1"):
        roc_curve([0, 2, 1], [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="same length"):
        roc_curve([0, 1], [0.1, 0.5, 0.9])


def test_calibration_of_a_calibrated_score() -> None:
    rng = np.random.default_rng(5)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    cal = calibration_bins(y, p, bins=10)
    assert len(cal.counts) == 10
    assert cal.counts.sum() == 20000
    assert np.abs(cal.observed - cal.predicted).max() < 0.03
    assert cal.brier == pytest.approx(1 / 6, abs=0.01)  # E[p(1-p)] for uniform p


def test_calibration_refuses_non_probabilities() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_bins([0, 1], [0.5, 1.5])


def test_the_pngs_are_written_and_return_their_numbers(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.3).astype(int)
    s = np.clip(0.5 * y + 0.5 * rng.random(300), 0, 1)
    auc = roc_png(tmp_path / "sub" / "roc.png", y, s, "Sepsis within 6 h")
    brier = calibration_png(tmp_path / "cal.png", y, s, bins=5, title="Sepsis within 6 h")
    assert auc == pytest.approx(pairwise_auc(y, s))
    assert brier == pytest.approx(float(np.mean((s - y) ** 2)))
    for name in ("sub/roc.png", "cal.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 5000
