"""Report figures, one function per PNG (matplotlib on the non-interactive Agg backend).

Every function takes the output path first, draws one figure, writes it, closes it and
returns the figure's headline number where it has one (AUROC for :func:`roc_png`, the
Brier score for :func:`calibration_png`). The number is computed here with numpy, not
read back from the picture, so callers can put it in a table next to the plot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

DPI = 110


def _labels_scores(
    y_true: ArrayLike, y_score: ArrayLike
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    truth = np.asarray(y_true)
    score = np.asarray(y_score, dtype=np.float64)
    if truth.ndim != 1 or score.ndim != 1 or len(truth) != len(score):
        raise ValueError(
            f"y_true and y_score must be 1-D of the same length, got {truth.shape}, {score.shape}"
        )
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("y_true must hold only 0/1 (or False/True) labels")
    if not np.isfinite(score).all():
        raise ValueError("y_score holds NaN or infinite values")
    return truth.astype(bool), score


def roc_curve(
    y_true: ArrayLike, y_score: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """False and true positive rates at every distinct threshold, and the AUROC.

    Tied scores move the curve diagonally (the usual convention, so the AUROC equals the
    probability that a random positive scores above a random negative, ties counting half).

    >>> fpr, tpr, auc = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> auc
    0.75
    >>> roc_curve([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])[2]
    0.5
    """
    truth, score = _labels_scores(y_true, y_score)
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"ROC needs both classes: {positives} positive and {negatives} negative labels"
        )
    order = np.argsort(-score, kind="mergesort")
    score, truth = score[order], truth[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    tps = np.cumsum(truth)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    tpr = np.r_[0.0, tps / positives]
    fpr = np.r_[0.0, fps / negatives]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    return fpr, tpr, auc


@dataclass(frozen=True)
class CalibrationBins:
    """Per non-empty bin: its centre, mean predicted probability, observed fraction, count."""

    centers: NDArray[np.float64]
    predicted: NDArray[np.float64]
    observed: NDArray[np.float64]
    counts: NDArray[np.int64]
    brier: float


def calibration_bins(y_true: ArrayLike, y_score: ArrayLike, bins: int = 10) -> CalibrationBins:
    """Equal-width bins over [0, 1] (scores must be probabilities), empty bins dropped.

    >>> c = calibration_bins([0, 0, 1, 1], [0.05, 0.15, 0.85, 0.95], bins=2)
    >>> c.predicted.tolist(), c.observed.tolist(), c.counts.tolist()
    ([0.1, 0.9], [0.0, 1.0], [2, 2])
    >>> round(c.brier, 4)
    0.0125
    """
    truth, score = _labels_scores(y_true, y_score)
    if bins < 1:
        raise ValueError("bins must be >= 1")
    if len(score) == 0:
        raise ValueError("no predictions to calibrate")
    if score.min() < 0.0 or score.max() > 1.0:
        raise ValueError("calibration needs probabilities in [0, 1]")
    index = np.minimum((score * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, weights=score, minlength=bins)
    hits = np.bincount(index, weights=truth.astype(np.float64), minlength=bins)
    keep = counts > 0
    return CalibrationBins(
        centers=(np.arange(bins, dtype=np.float64)[keep] + 0.5) / bins,
        predicted=np.round(sums[keep] / counts[keep], 12),
        observed=hits[keep] / counts[keep],
        counts=counts[keep].astype(np.int64),
        brier=float(np.mean((score - truth) ** 2)),
    )


def _save(fig: Figure, path: Path | str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(target, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)


def roc_png(path: Path | str, y_true: ArrayLike, y_score: ArrayLike, title: str) -> float:
    """Write the ROC curve of ``y_score`` against 0/1 ``y_true`` to ``path``; return the AUROC.

    Raises ValueError when only one class is present (the AUROC is undefined then).
    """
    fpr, tpr, auc = roc_curve(y_true, y_score)
    truth = np.asarray(y_true).astype(bool)
    fig, ax = plt.subplots(figsize=(5.0, 5.0))
    ax.plot(fpr, tpr, color="#1f77b4", lw=2, label=f"AUROC {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="#999999", ls="--", lw=1, label="chance")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="False positive rate (1 - specificity)",
        ylabel="True positive rate (sensitivity)",
        title=title,
    )
    ax.text(
        0.98,
        0.03,
        f"n = {len(truth)} ({int(truth.sum())} positive)",
        ha="right",
        transform=ax.transAxes,
        fontsize=8,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.08))
    _save(fig, path)
    return auc


def calibration_png(
    path: Path | str,
    y_true: ArrayLike,
    y_score: ArrayLike,
    bins: int = 10,
    title: str = "Calibration",
) -> float:
    """Write a reliability diagram (observed vs predicted per bin, with counts); return Brier."""
    cal = calibration_bins(y_true, y_score, bins)
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5.0, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], color="#999999", ls="--", lw=1, label="perfectly calibrated")
    ax.plot(
        cal.predicted, cal.observed, marker="o", color="#d62728", label=f"Brier {cal.brier:.3f}"
    )
    ax.set(xlim=(0, 1), ylim=(0, 1.01), ylabel="Observed fraction positive", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    width = 1.0 / bins
    hist.bar(cal.centers, cal.counts, width=width * 0.8, color="#7f7f7f")
    hist.set(xlabel="Predicted probability", ylabel="Predictions")
    hist.set_yscale("log" if cal.counts.max() > 50 * max(1, cal.counts.min()) else "linear")
    _save(fig, path)
    return cal.brier
