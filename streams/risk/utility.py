"""The PhysioNet/CinC 2019 normalised utility score, AUROC and AUPRC (pure numpy).

The utility follows the challenge's ``evaluate_sepsis_score.py`` (Reyna et al., Crit Care
Med 2020;48(2):210-217) as CLINICAL.md states it. Per patient, hour index ``t`` (row
number, 0-based) and ``t_sepsis`` = first row with SepsisLabel 1, plus 6:

- septic, ``t <= t_sepsis + 3``: a positive prediction earns a reward rising linearly
  from 0 at ``t_sepsis - 12`` to 1 at ``t_sepsis - 6`` (never below -0.05), then falling
  to 0 at ``t_sepsis + 3``; a negative one costs 0 until ``t_sepsis - 6``, then falls
  linearly to -2 at ``t_sepsis + 3``; later hours score 0;
- non-septic: each positive hour -0.05, each negative 0.

Normalised utility = (U_observed - U_no_alarm) / (U_best - U_no_alarm) over all patients.

>>> labels = [0] * 10 + [1] * 5
>>> round(patient_utility(labels, labels), 4)
3.8889
>>> patient_utility([0, 0, 0], [1, 1, 0])
-0.1
>>> normalised_utility([labels, [0, 0]], [labels, [0, 0]]) < 1.0
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

DT_EARLY = -12.0
DT_OPTIMAL = -6.0
DT_LATE = 3.0
MAX_U_TP = 1.0
MIN_U_FN = -2.0
U_FP = -0.05
U_TN = 0.0


def patient_utility(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Sum of the hourly utilities of one patient's binary predictions."""
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(predictions, dtype=bool)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in length")
    n = len(y)
    if n == 0:
        return 0.0
    t = np.arange(n, dtype=float)
    if not y.any():
        return float(np.where(p, U_FP, U_TN).sum())
    t_sepsis = float(np.argmax(y)) - DT_OPTIMAL
    m1 = MAX_U_TP / (DT_OPTIMAL - DT_EARLY)
    b1 = -m1 * DT_EARLY
    m2 = -MAX_U_TP / (DT_LATE - DT_OPTIMAL)
    b2 = -m2 * DT_LATE
    m3 = MIN_U_FN / (DT_LATE - DT_OPTIMAL)
    b3 = -m3 * DT_OPTIMAL
    rel = t - t_sepsis
    early = t <= t_sepsis + DT_OPTIMAL
    scored = t <= t_sepsis + DT_LATE
    tp = np.where(early, np.maximum(m1 * rel + b1, U_FP), m2 * rel + b2)
    fn = np.where(early, 0.0, m3 * rel + b3)
    u = np.where(p, tp, fn)
    return float(np.where(scored, u, 0.0).sum())


def best_predictions(labels: ArrayLike) -> NDArray[np.bool_]:
    """The best possible predictions: 1 from ``t_sepsis - 12`` to ``t_sepsis + 3``."""
    y = np.asarray(labels, dtype=bool)
    best = np.zeros(len(y), dtype=bool)
    if y.any():
        t_sepsis = int(np.argmax(y)) - int(DT_OPTIMAL)
        best[max(0, t_sepsis + int(DT_EARLY)) : min(t_sepsis + int(DT_LATE) + 1, len(y))] = True
    return best


def normalised_utility(labels: Sequence[ArrayLike], predictions: Sequence[ArrayLike]) -> float:
    """The challenge's normalised utility over patients (one array per patient)."""
    if len(labels) != len(predictions):
        raise ValueError("one prediction array per patient")
    observed = best = inaction = 0.0
    for y, p in zip(labels, predictions, strict=True):
        y_arr = np.asarray(y, dtype=bool)
        observed += patient_utility(y_arr, p)
        best += patient_utility(y_arr, best_predictions(y_arr))
        inaction += patient_utility(y_arr, np.zeros(len(y_arr), dtype=bool))
    if best == inaction:
        return 0.0
    return (observed - inaction) / (best - inaction)


def auroc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve (ties count one half).

    >>> auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(y_score, dtype=float)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def auprc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the precision-recall curve (average precision, step-wise).

    >>> round(auprc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(y_score, dtype=float)
    pos = int(y.sum())
    if pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]  # end of each tie group
    precision = tp[last] / (tp[last] + fp[last])
    recall = tp[last] / pos
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(((recall - recall_prev) * precision).sum())
