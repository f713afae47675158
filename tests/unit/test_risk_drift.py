"""Drift detection on the prequential loss: per join (one patient's rows at discharge),
not per row. A septic patient's rows are joined as one block of high losses; per row,
ADWIN reported each such block as a change."""

from __future__ import annotations

import random

from streams.risk.monitor import PrequentialMonitor


def discharge_stream(
    monitor: PrequentialMonitor, patients: int, *, worse_from: int | None = None, seed: int = 1
) -> int | None:
    """Patients joined one after another: 9 % septic (their last 10 rows labelled); the
    model's probabilities are good until ``worse_from``, then uninformative. Returns the
    first patient at which drift was reported from ``worse_from`` on."""
    rng = random.Random(seed)
    found = None
    for patient in range(patients):
        septic = rng.random() < 0.09
        rows = rng.randint(20, 60)
        worse = worse_from is not None and patient >= worse_from
        for row in range(rows):
            p = rng.uniform(0.4, 0.6) if worse else rng.uniform(0.02, 0.15)
            monitor.update(septic and row >= rows - 10, p)
        if monitor.end_join(float(patient)) and worse and found is None:
            found = patient
    return found


def test_a_steady_mix_of_septic_and_other_patients_is_not_drift() -> None:
    monitor = PrequentialMonitor()
    discharge_stream(monitor, 3000)
    assert monitor.drifts == 0
    assert monitor.count > 3000 * 20


def test_a_model_that_stops_discriminating_is_drift_within_a_hundred_patients() -> None:
    monitor = PrequentialMonitor()
    found = discharge_stream(monitor, 3000, worse_from=1500)
    assert found is not None
    assert 1500 <= found < 1600
    assert monitor.last_drift_at == float(found)


def test_per_row_input_would_report_the_septic_blocks_as_drift() -> None:
    """Why per join: the same steady stream, each row its own join."""
    monitor = PrequentialMonitor()
    rng = random.Random(1)
    for _patient in range(3000):
        septic = rng.random() < 0.09
        rows = rng.randint(20, 60)
        for row in range(rows):
            monitor.update(septic and row >= rows - 10, rng.uniform(0.02, 0.15))
            monitor.end_join()
    assert monitor.drifts > 50
