"""The rule-based score used while a model is cold (has learned too little).

A fixed logistic mapping of the bedside screening scores the worker already computes
(CLINICAL.md): NEWS2 (>= 5 urgent, >= 7 emergency), qSOFA (>= 2) and the 24-h SOFA
rise (>= 2, Sepsis-3). The weights are hand-set so that NEWS2 5, qSOFA 2 or a SOFA rise
of 2 each reach about 0.5 on their own *(unverified: a monotone ordering of risk, not a
calibrated probability)*; with none of them known the score is the prior 0.05.

>>> round(rule_score({"news2": 5.0}), 2), round(rule_score({"qsofa": 2.0}), 2)
(0.5, 0.5)
>>> round(rule_score({}), 9) == PRIOR
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping

PRIOR = 0.05
_INTERCEPT = math.log(PRIOR / (1 - PRIOR))
_TO_HALF = -_INTERCEPT
WEIGHTS = {"news2": _TO_HALF / 5, "qsofa": _TO_HALF / 2, "sofa_total_rise_24h": _TO_HALF / 2}
RULE_THRESHOLD = 0.5
"""The fallback's decision threshold (reached by NEWS2 >= 5, qSOFA >= 2 or SOFA rise >= 2)."""


def rule_score(features: Mapping[str, float | None]) -> float:
    """Probability-like score from NEWS2, qSOFA and the SOFA rise (missing = not counted)."""
    z = _INTERCEPT
    for name, weight in WEIGHTS.items():
        value = features.get(name)
        if value is not None:
            z += weight * value
    return 1.0 / (1.0 + math.exp(-z))
