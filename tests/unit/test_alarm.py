"""The alarm state machine: on-delay, off-delay, brief crossings, unknown input."""

from __future__ import annotations

from streams.alarm import AlarmPhase, AlarmState, AlarmTiming, Transition, step

TIMING = AlarmTiming(on_delay_s=300, off_delay_s=120)


def run(
    conditions: list[tuple[float, bool | None, bool | None]],
    state: AlarmState | None = None,
) -> tuple[AlarmState, list[Transition]]:
    state = state or AlarmState()
    out = []
    for at, onset, resolved in conditions:
        state, transition = step(state, TIMING, at=at, onset=onset, resolved=resolved)
        if transition:
            out.append(transition)
    return state, out


def low(t0: int, t1: int) -> list[tuple[float, bool | None, bool | None]]:
    return [(float(t), True, False) for t in range(t0, t1)]


def normal(t0: int, t1: int) -> list[tuple[float, bool | None, bool | None]]:
    return [(float(t), False, True) for t in range(t0, t1)]


def test_start_fires_exactly_when_the_condition_has_held_for_the_on_delay() -> None:
    state, out = run(low(100, 400))
    assert out == []
    assert state.phase is AlarmPhase.PENDING
    state, out = run([(400.0, True, False)], state)
    assert out == [Transition("start", 400.0, 100.0, 0)]
    assert state.phase is AlarmPhase.ACTIVE


def test_brief_crossing_shorter_than_on_delay_raises_nothing() -> None:
    state, out = run(low(0, 299) + normal(299, 1000))
    assert out == []
    assert state == AlarmState()


def test_end_fires_after_resolution_lasts_the_off_delay() -> None:
    state, out = run(low(0, 301) + normal(301, 421))
    assert [t.phase for t in out] == ["start"]
    state, out = run([(421.0, False, True)], state)
    assert out == [Transition("end", 421.0, 0.0, 1)]
    assert state == AlarmState()


def test_relapse_during_off_delay_keeps_the_same_alert_active() -> None:
    state, out = run(low(0, 301) + normal(301, 400) + low(400, 450) + normal(450, 569))
    assert [t.phase for t in out] == ["start"]
    assert state.phase is AlarmPhase.CLEARING
    state, out = run([(570.0, False, True)], state)
    assert [(t.phase, t.condition_since) for t in out] == [("end", 0.0)]


def test_unknown_input_never_confirms_a_pending_alarm() -> None:
    state, out = run([*low(0, 200), (200.0, None, None), *low(201, 400)])
    assert out == []
    assert state.phase is AlarmPhase.PENDING
    assert state.condition_since == 201.0


def test_unknown_input_never_clears_an_active_alarm() -> None:
    state, out = run([*low(0, 301), *normal(301, 400), (400.0, None, None), *normal(401, 500)])
    assert [t.phase for t in out] == ["start"]
    assert state.phase is AlarmPhase.CLEARING
    assert state.clearing_since == 401.0


def test_zero_delays_raise_and_clear_on_the_same_sample() -> None:
    timing = AlarmTiming(0, 0)
    state, out = step(AlarmState(), timing, at=5.0, onset=True, resolved=False)
    assert out == Transition("start", 5.0, 5.0, 0)
    state, out = step(state, timing, at=6.0, onset=False, resolved=True)
    assert out == Transition("end", 6.0, 5.0, 1)


def test_between_hysteresis_bounds_an_active_alarm_stays_active() -> None:
    # neither alarming (onset False) nor resolved (inside the hysteresis band)
    state, _ = run(low(0, 301))
    state, out = run([(float(t), False, False) for t in range(301, 1000)], state)
    assert out == []
    assert state.phase is AlarmPhase.ACTIVE


def test_state_round_trips_through_a_dict() -> None:
    state, _ = run(low(0, 301) + normal(301, 330))
    assert AlarmState.from_state(state.to_state()) == state
