"""The simulated ICU (services/simulator.py): determinism, physiology, episodes, ground truth."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.codes import Quantity
from schemas.observations import VitalSigns
from services.simulator import (
    HypotensionEpisode,
    SimulationConfig,
    ground_truth,
    patient_id_of,
    simulate,
    write_ground_truth,
)

START = datetime(2026, 3, 14, 2, 0, 0, tzinfo=UTC)
RUN_S = 30 * 60
BEDS = 8
EPISODE = HypotensionEpisode(bed_index=3, onset_s=600.0, duration_s=600.0, ramp_s=30.0)
WINDOW_S = 60  # the rules' feature: 1-min median MAP


def fixed_clock() -> datetime:
    return START + timedelta(milliseconds=250)


def run(config: SimulationConfig, clock: Any = fixed_clock) -> list[tuple[int, list[VitalSigns]]]:
    assert config.duration_s is not None
    return list(simulate(config, clock))


def comparable(batch: list[VitalSigns]) -> list[dict[str, Any]]:
    return [sample.model_dump(exclude={"received_at"}) for sample in batch]


@pytest.fixture(scope="module")
def icu_run() -> list[tuple[int, list[VitalSigns]]]:
    """30 minutes of 8 beds; bed 3 has a 10-minute hypotension episode from minute 10."""
    config = SimulationConfig(
        beds=BEDS, seed=2026, start=START, duration_s=RUN_S, episodes=(EPISODE,)
    )
    return run(config)


def series(run_: list[tuple[int, list[VitalSigns]]], bed: int, quantity: Quantity) -> np.ndarray:
    values = [batch[bed - 1].value_of(quantity) for _, batch in run_]
    assert None not in values
    return np.array(values, dtype=float)


def rolling_median(values: np.ndarray, window: int = WINDOW_S) -> np.ndarray:
    """Trailing median: element i is the median of seconds i .. i + window - 1."""
    return np.median(np.lib.stride_tricks.sliding_window_view(values, window), axis=1)


# --- determinism -----------------------------------------------------------------------


def test_same_seed_and_start_give_identical_samples_whatever_the_wall_clock() -> None:
    config = SimulationConfig(beds=3, seed=11, start=START, duration_s=300)
    first = run(config, clock=fixed_clock)
    second = run(config, clock=lambda: datetime(2031, 1, 1, tzinfo=UTC))
    assert [s for s, _ in first] == [s for s, _ in second]
    assert [comparable(b) for _, b in first] == [comparable(b) for _, b in second]
    # received_at is the wall clock: the only thing allowed to differ.
    assert first[0][1][0].received_at != second[0][1][0].received_at


def test_different_seeds_give_different_patients() -> None:
    a = run(SimulationConfig(beds=2, seed=11, start=START, duration_s=120))
    b = run(SimulationConfig(beds=2, seed=12, start=START, duration_s=120))
    for bed in (1, 2):
        hr_a, hr_b = series(a, bed, Quantity.HEART_RATE), series(b, bed, Quantity.HEART_RATE)
        map_a, map_b = series(a, bed, Quantity.ABP_MEAN), series(b, bed, Quantity.ABP_MEAN)
        assert not np.array_equal(hr_a, hr_b)
        assert not np.array_equal(map_a, map_b)


def test_adding_beds_does_not_change_existing_beds() -> None:
    episode = (HypotensionEpisode(bed_index=2, onset_s=60, duration_s=120),)
    small = run(SimulationConfig(beds=3, seed=5, start=START, duration_s=240, episodes=episode))
    large = run(SimulationConfig(beds=7, seed=5, start=START, duration_s=240, episodes=episode))
    assert all(len(batch) == 7 for _, batch in large)
    for (_, few), (_, many) in zip(small, large, strict=True):
        assert comparable(few) == comparable(many[:3])


def test_samples_are_one_second_apart_in_event_time_from_start() -> None:
    config = SimulationConfig(beds=4, seed=3, start=START, duration_s=90)
    samples = run(config)
    assert [second for second, _ in samples] == list(range(90))
    for second, batch in samples:
        assert [s.patient_id for s in batch] == [patient_id_of(i) for i in range(1, 5)]
        for sample in batch:
            times = {m.observed_at for m in sample.measurements}
            assert times == {START + timedelta(seconds=second)}
            assert sample.observed_at == START + timedelta(seconds=second)


def test_without_a_duration_it_runs_on_at_one_hertz() -> None:
    config = SimulationConfig(beds=1, seed=3, start=START, duration_s=None)
    first = list(islice(simulate(config, fixed_clock), 2000))
    assert first[-1][0] == 1999
    assert first[-1][1][0].observed_at == START + timedelta(seconds=1999)


# --- physiology ------------------------------------------------------------------------


def test_episode_bed_median_map_falls_below_65_and_recovers(
    icu_run: list[tuple[int, list[VitalSigns]]],
) -> None:
    medians = rolling_median(series(icu_run, EPISODE.bed_index, Quantity.ABP_MEAN))
    onset, end = int(EPISODE.onset_s), int(EPISODE.onset_s + EPISODE.duration_s)
    ramp = int(EPISODE.ramp_s)
    # window starting at second i covers seconds i .. i+59
    before = medians[: onset - WINDOW_S + 1]
    plateau = medians[onset + ramp : end - ramp - WINDOW_S + 1]
    after = medians[end:]
    assert len(before) > 0
    assert len(after) > 0
    assert before.min() >= 65
    assert plateau.max() < 65, "the MAP-low rule must see a sustained drop"
    assert len(plateau) >= 5 * 60, "long enough for the 5-min on-delay"
    assert after.min() >= 65


def test_other_beds_median_map_stays_at_or_above_70(
    icu_run: list[tuple[int, list[VitalSigns]]],
) -> None:
    for bed in range(1, BEDS + 1):
        if bed == EPISODE.bed_index:
            continue
        medians = rolling_median(series(icu_run, bed, Quantity.ABP_MEAN))
        assert medians.min() >= 70, f"bed {bed} would raise a false MAP alarm"


def test_episode_brings_compensatory_tachycardia(
    icu_run: list[tuple[int, list[VitalSigns]]],
) -> None:
    hr = series(icu_run, EPISODE.bed_index, Quantity.HEART_RATE)
    onset, end = int(EPISODE.onset_s), int(EPISODE.onset_s + EPISODE.duration_s)
    ramp = int(EPISODE.ramp_s)
    baseline = np.median(hr[: onset - 1])
    during = np.median(hr[onset + ramp : end - ramp])
    assert during - baseline > 10


def test_all_values_are_physiologically_plausible(
    icu_run: list[tuple[int, list[VitalSigns]]],
) -> None:
    for bed in range(1, BEDS + 1):
        hr = series(icu_run, bed, Quantity.HEART_RATE)
        spo2 = series(icu_run, bed, Quantity.SPO2)
        temp = series(icu_run, bed, Quantity.TEMPERATURE)
        rr = series(icu_run, bed, Quantity.RESP_RATE)
        sbp = series(icu_run, bed, Quantity.ABP_SYS)
        mean = series(icu_run, bed, Quantity.ABP_MEAN)
        dbp = series(icu_run, bed, Quantity.ABP_DIA)
        assert 30 <= hr.min() <= hr.max() <= 200, bed
        assert 50 <= spo2.min() <= spo2.max() <= 100, bed
        assert 34 <= temp.min() <= temp.max() <= 41, bed
        assert 4 <= rr.min() <= rr.max() <= 45, bed
        assert np.all(sbp > mean), bed
        assert np.all(mean > dbp), bed
        assert dbp.min() > 20, bed


def test_samples_are_coded_like_a_bedside_monitor(
    icu_run: list[tuple[int, list[VitalSigns]]],
) -> None:
    _, batch = icu_run[0]
    sample = batch[EPISODE.bed_index - 1]
    assert sample.patient_id == "sim-003"
    assert sample.bed == "ICU1-03"
    assert sample.source.adapter == "simulator"
    assert {m.quantity for m in sample.measurements} >= {
        Quantity.HEART_RATE,
        Quantity.ABP_SYS,
        Quantity.ABP_DIA,
        Quantity.ABP_MEAN,
        Quantity.SPO2,
        Quantity.RESP_RATE,
        Quantity.TEMPERATURE,
    }
    assert all(m.device_id == "sim-monitor-003" for m in sample.measurements)


# --- ground truth ----------------------------------------------------------------------


def test_ground_truth_lists_the_episode_in_iso_utc(tmp_path: Path) -> None:
    config = SimulationConfig(beds=BEDS, seed=2026, start=START, episodes=(EPISODE,))
    [truth] = ground_truth(config)
    assert truth.scenario == "hypotension"
    assert truth.patient_id == patient_id_of(EPISODE.bed_index) == "sim-003"
    assert truth.bed == "ICU1-03"
    assert truth.onset == "2026-03-14T02:10:00+00:00"
    assert truth.end == "2026-03-14T02:20:00+00:00"

    path = tmp_path / "nested" / "truth.jsonl"
    write_ground_truth(config, path)
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "scenario": "hypotension",
            "patient_id": "sim-003",
            "bed": "ICU1-03",
            "onset": "2026-03-14T02:10:00+00:00",
            "end": "2026-03-14T02:20:00+00:00",
        }
    ]


def test_ground_truth_is_in_utc_even_when_start_has_another_offset() -> None:
    """The samples' observed_at are UTC; the truth file must use the same clock face."""
    berlin_winter = timezone(timedelta(hours=1))
    local_start = datetime(2026, 3, 14, 3, 0, 0, tzinfo=berlin_winter)  # == START
    config = SimulationConfig(beds=BEDS, seed=2026, start=local_start, episodes=(EPISODE,))
    [truth] = ground_truth(config)
    assert truth.onset == "2026-03-14T02:10:00+00:00"
    assert truth.end == "2026-03-14T02:20:00+00:00"


def test_ground_truth_lists_no_episode_the_samples_do_not_show() -> None:
    """Two scripted episodes on one bed: both must be played, or the config refused."""
    episodes = (
        HypotensionEpisode(bed_index=1, onset_s=120, duration_s=300),
        HypotensionEpisode(bed_index=1, onset_s=900, duration_s=300),
    )
    try:
        config = SimulationConfig(beds=1, seed=4, start=START, duration_s=1300, episodes=episodes)
    except ValueError:
        return  # refusing a second episode per bed keeps truth and data consistent too
    medians = rolling_median(series(run(config), 1, Quantity.ABP_MEAN))
    for truth in ground_truth(config):
        onset_s = int((datetime.fromisoformat(truth.onset) - START).total_seconds())
        end_s = int((datetime.fromisoformat(truth.end) - START).total_seconds())
        plateau = medians[onset_s + 30 : end_s - 30 - WINDOW_S + 1]
        assert plateau.max() < 65, f"ground truth says MAP fell at {truth.onset}; it did not"


# --- invalid configurations ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beds": 8, "episodes": (HypotensionEpisode(bed_index=9),)}, "episode bed 9 outside"),
        ({"beds": 8, "episodes": (HypotensionEpisode(bed_index=0),)}, "episode bed 0 outside"),
        ({"beds": 0, "episodes": ()}, "at least one bed"),
        ({"beds": 8, "start": datetime(2026, 3, 14, 2, 0)}, "timezone-aware"),
    ],
)
def test_invalid_configs_raise_value_error(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("start", START)
    with pytest.raises(ValueError, match=message):
        SimulationConfig(seed=1, **kwargs)
