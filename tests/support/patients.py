"""Scripted patients for tests: realistic 1 Hz vital signs with a known MAP trace."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from schemas.codes import Quantity
from schemas.common import SourceInfo
from schemas.observations import Measurement, VitalSigns

T0 = datetime(2026, 3, 14, 8, 0, tzinfo=UTC)


def vitals(
    patient_id: str,
    at: datetime,
    map_mmhg: float | None,
    *,
    hr: float = 88.0,
    artefact: bool = False,
    bed: str = "ICU1-03",
) -> VitalSigns:
    """One bedside-monitor sample; MAP with matching systolic/diastolic."""
    measurements = [
        Measurement.of(Quantity.HEART_RATE, hr, at, device_id="mx800-03"),
        Measurement.of(Quantity.SPO2, 97.0, at, device_id="mx800-03"),
    ]
    if map_mmhg is not None:
        measurements += [
            Measurement.of(Quantity.ABP_SYS, map_mmhg + 30, at, device_id="mx800-03"),
            Measurement.of(Quantity.ABP_DIA, map_mmhg - 15, at, device_id="mx800-03"),
            Measurement.of(
                Quantity.ABP_MEAN, map_mmhg, at, device_id="mx800-03", artefact=artefact
            ),
        ]
    return VitalSigns(
        patient_id=patient_id,
        bed=bed,
        care_unit="ICU1",
        source=SourceInfo(adapter="test", device_id="mx800-03"),
        received_at=at,
        measurements=tuple(measurements),
    )


def map_trace(
    segments: Sequence[tuple[int, float]], seed: int = 1, noise: float = 1.5
) -> list[float]:
    """Concatenate (seconds, level mmHg) segments with Gaussian noise, 1 value a second."""
    rng = np.random.default_rng(seed)
    out: list[float] = []
    for seconds, level in segments:
        out += [round(float(level + rng.normal(0, noise))) for _ in range(seconds)]
    return out


def first_time_median_below(trace: Sequence[float], threshold: float, width: int = 60) -> int:
    """Independent reference: first second whose trailing ``width``-second median < threshold."""
    for t in range(len(trace)):
        if float(np.median(trace[max(0, t - width + 1) : t + 1])) < threshold:
            return t
    raise AssertionError("median never crossed")


def first_time_median_at_or_above_after(
    trace: Sequence[float], threshold: float, after: int, width: int = 60
) -> int:
    for t in range(after, len(trace)):
        if float(np.median(trace[max(0, t - width + 1) : t + 1])) >= threshold:
            return t
    raise AssertionError("median never recovered")


def seconds(n: int) -> timedelta:
    return timedelta(seconds=n)
