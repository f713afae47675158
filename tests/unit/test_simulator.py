"""The vitals-only view (services/simulator.py): determinism, the hypotension episode, truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.annotations import GroundTruth
from schemas.codes import Quantity
from schemas.observations import VitalSigns
from services.sim import IcuConfig, Scenario, simulate_icu
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
EPISODE = HypotensionEpisode(bed_index=3, onset_s=600.0, duration_s=600.0)
RAMP_S = 30
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


def test_same_seed_and_start_give_identical_samples_whatever_the_wall_clock() -> None:
    config = SimulationConfig(beds=3, seed=11, start=START, duration_s=300)
    first = run(config, clock=fixed_clock)
    second = run(config, clock=lambda: datetime(2031, 1, 1, tzinfo=UTC))
    assert [comparable(b) for _, b in first] == [comparable(b) for _, b in second]
    assert first[0][1][0].received_at != second[0][1][0].received_at


def test_different_seeds_give_different_patients() -> None:
    a = run(SimulationConfig(beds=2, seed=11, start=START, duration_s=120))
    b = run(SimulationConfig(beds=2, seed=12, start=START, duration_s=120))
    for bed in (1, 2):
        assert not np.array_equal(
            series(a, bed, Quantity.HEART_RATE), series(b, bed, Quantity.HEART_RATE)
        )


def test_adding_beds_does_not_change_existing_beds() -> None:
    episode = (HypotensionEpisode(bed_index=2, onset_s=60, duration_s=120),)
    small = run(SimulationConfig(beds=3, seed=5, start=START, duration_s=240, episodes=episode))
    large = run(SimulationConfig(beds=7, seed=5, start=START, duration_s=240, episodes=episode))
    assert all(len(batch) == 7 for _, batch in large)
    for (_, few), (_, many) in zip(small, large, strict=True):
        assert comparable(few) == comparable(many[:3])


def test_one_sample_per_bed_per_second_in_event_time_from_start() -> None:
    samples = run(SimulationConfig(beds=4, seed=3, start=START, duration_s=90))
    assert [second for second, _ in samples] == list(range(90))
    for second, batch in samples:
        assert [s.patient_id for s in batch] == [patient_id_of(i) for i in range(1, 5)]
        for sample in batch:
            assert {m.observed_at for m in sample.measurements} == {
                START + timedelta(seconds=second)
            }


def test_without_a_duration_it_runs_on_at_one_hertz() -> None:
    config = SimulationConfig(beds=1, seed=3, start=START, duration_s=None)
    first = list(islice(simulate(config, fixed_clock), 2000))
    assert first[-1][0] == 1999
    assert first[-1][1][0].observed_at == START + timedelta(seconds=1999)


def test_episode_bed_median_map_falls_below_65_and_recovers(
    icu_run: list[tuple[int, list[VitalSigns]]],
) -> None:
    medians = rolling_median(series(icu_run, EPISODE.bed_index, Quantity.ABP_MEAN))
    onset, end = int(EPISODE.onset_s), int(EPISODE.onset_s + EPISODE.duration_s)
    before = medians[: onset - WINDOW_S + 1]
    plateau = medians[onset + RAMP_S : end - RAMP_S - WINDOW_S + 1]
    after = medians[end:]
    assert before.min() >= 65
    assert plateau.max() < 65, "the MAP-low rule must see a sustained drop"
    assert len(plateau) >= 5 * 60, "long enough for the 5-min on-delay"
    assert after.min() >= 65
    raw = series(icu_run, EPISODE.bed_index, Quantity.ABP_MEAN)
    assert 52 <= np.median(raw[onset + RAMP_S : end - RAMP_S]) <= 60, "nadir about 56 mmHg"


def test_other_beds_with_an_arterial_line_stay_at_or_above_70(
    icu_run: list[tuple[int, list[VitalSigns]]],
) -> None:
    checked = 0
    for bed in range(1, BEDS + 1):
        values = [batch[bed - 1].value_of(Quantity.ABP_MEAN) for _, batch in icu_run]
        if bed == EPISODE.bed_index or None in values:
            continue
        checked += 1
        assert rolling_median(np.array(values, dtype=float)).min() >= 70, f"bed {bed}"
    assert checked >= 3


def test_episode_brings_compensatory_tachycardia(
    icu_run: list[tuple[int, list[VitalSigns]]],
) -> None:
    hr = series(icu_run, EPISODE.bed_index, Quantity.HEART_RATE)
    onset, end = int(EPISODE.onset_s), int(EPISODE.onset_s + EPISODE.duration_s)
    assert np.median(hr[onset + RAMP_S : end - RAMP_S]) - np.median(hr[:onset]) >= 15


def test_beds_without_an_arterial_line_get_a_cuff_pressure_every_15_minutes(
    icu_run: list[tuple[int, list[VitalSigns]]],
) -> None:
    cuffed = [
        bed
        for bed in range(1, BEDS + 1)
        if icu_run[0][1][bed - 1].value_of(Quantity.ABP_MEAN) is None
    ]
    assert cuffed, "seed 2026 has beds without an arterial line"
    for bed in cuffed:
        times = [s for s, batch in icu_run if batch[bed - 1].value_of(Quantity.NBP_MEAN)]
        assert len(times) == 2
        assert times[1] - times[0] == 900


def test_the_facade_plays_the_same_physiology_as_the_icu_engine() -> None:
    legacy = run(SimulationConfig(beds=2, seed=9, start=START, duration_s=200))
    icu = IcuConfig(
        beds=2,
        seed=9,
        start=START,
        duration_s=200,
        scenarios=(Scenario("hypotension", 1, 120, 600),),
    )
    vitals = [
        [r.payload for r in records if r.topic == "vitals"]
        for _, records in simulate_icu(icu, fixed_clock)
    ]
    assert [comparable(b) for _, b in legacy] == [comparable(b) for b in vitals]  # type: ignore[arg-type]


def test_ground_truth_is_a_groundtruth_record_per_episode_in_utc(tmp_path: Path) -> None:
    berlin_winter = timezone(timedelta(hours=1))
    config = SimulationConfig(
        beds=BEDS, seed=2026, start=START.astimezone(berlin_winter), episodes=(EPISODE,)
    )
    [truth] = ground_truth(config)
    assert (truth.scenario, truth.patient_id, truth.bed) == ("hypotension", "sim-003", "ICU1-03")
    assert truth.onset == datetime(2026, 3, 14, 2, 10, tzinfo=UTC)
    assert truth.end == datetime(2026, 3, 14, 2, 20, tzinfo=UTC)
    assert truth.organs == ("cardiovascular",)
    path = tmp_path / "nested" / "truth.jsonl"
    write_ground_truth(config, path)
    assert [GroundTruth.model_validate_json(line) for line in path.read_text().splitlines()] == [
        truth
    ]
    assert '"onset":"2026-03-14T02:10:00Z"' in path.read_text()


def test_two_episodes_on_one_bed_are_both_played() -> None:
    episodes = (
        HypotensionEpisode(bed_index=1, onset_s=120, duration_s=300),
        HypotensionEpisode(bed_index=1, onset_s=900, duration_s=300),
    )
    config = SimulationConfig(beds=1, seed=4, start=START, duration_s=1300, episodes=episodes)
    medians = rolling_median(series(run(config), 1, Quantity.ABP_MEAN))
    for truth in ground_truth(config):
        assert truth.end is not None
        onset_s = int((truth.onset - START).total_seconds())
        end_s = int((truth.end - START).total_seconds())
        assert medians[onset_s + 30 : end_s - 30 - WINDOW_S + 1].max() < 65


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
