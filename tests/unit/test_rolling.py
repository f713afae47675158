"""RollingMedian: the event-time 1-min median behind the MAP rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.rolling import RollingMedian


def _reference_median(times: list[float], values: list[float], now: float, width: float) -> float:
    window = [v for t, v in zip(times, values, strict=True) if now - width < t <= now]
    return float(np.median(window))


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.floats(0, 5), min_size=1, max_size=120),
    values=st.lists(st.floats(20, 180), min_size=120, max_size=120),
    width=st.sampled_from([1.0, 10.0, 60.0]),
)
def test_matches_numpy_median_over_the_trailing_window(
    steps: list[float], values: list[float], width: float
) -> None:
    rolling = RollingMedian(width)
    times: list[float] = []
    now = 0.0
    for step, value in zip(steps, values, strict=False):
        now += step
        rolling.update(now, value)
        times.append(now)
        assert rolling.get() == pytest.approx(
            _reference_median(times, values[: len(times)], now, width)
        )


def test_window_excludes_samples_exactly_one_width_old() -> None:
    rolling = RollingMedian(60)
    rolling.update(0, 50.0)
    rolling.update(59, 90.0)
    assert rolling.get() == 70.0
    rolling.update(60, 90.0)  # t=0 is now outside (0, 60]
    assert rolling.get() == 90.0


def test_empty_window_is_unknown_not_zero() -> None:
    rolling = RollingMedian(60)
    assert rolling.get() is None
    rolling.update(0, 75.0)
    assert rolling.get_at(61) is None


def test_out_of_order_sample_is_refused() -> None:
    rolling = RollingMedian(60)
    rolling.update(10, 75.0)
    with pytest.raises(ValueError, match="out-of-order"):
        rolling.update(9, 70.0)


def test_state_survives_a_json_round_trip() -> None:
    rolling = RollingMedian(60)
    for t in range(90):
        rolling.update(float(t), 60.0 + (t % 7))
    restored = RollingMedian.from_state(json.loads(json.dumps(rolling.to_state())))
    assert restored.get() == rolling.get()
    for t in range(90, 150):
        rolling.update(float(t), 50.0 + (t % 11))
        restored.update(float(t), 50.0 + (t % 11))
        assert restored.get() == rolling.get()


def test_width_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RollingMedian(0)
