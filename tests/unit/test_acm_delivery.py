"""The PCD-04 sender's retry back-off and delivery watchdog, on an injected clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from schemas.alerts import AlertEvent, AlertPhase, AlertPriority
from services.acm.delivery import (
    DELIVERY_RULE_ID,
    Backoff,
    DeliveryWatchdog,
    delivery_alert,
)

T0 = datetime(2026, 5, 1, 14, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


# --- back-off ---------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap_and_stays_within_its_jitter_band() -> None:
    backoff = Backoff(base_s=0.25, cap_s=10.0, rng=random.Random(7).random)
    for attempt in range(1, 40):
        ceiling = min(10.0, 0.25 * 2 ** (attempt - 1))
        for _ in range(20):
            assert ceiling / 2 <= backoff.delay(attempt) <= ceiling


def test_backoff_jitter_spreads_senders_that_fail_together() -> None:
    delays = {round(Backoff(rng=random.Random(seed).random).delay(4), 6) for seed in range(20)}
    assert len(delays) >= 15  # twenty senders do not retry at the same instant


def test_backoff_survives_a_very_long_outage() -> None:
    assert Backoff(base_s=0.5, cap_s=30.0, rng=lambda: 1.0).delay(10_000) == 30.0


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)])
def test_backoff_refuses_nonsense(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="back-off"):
        Backoff(base_s=base, cap_s=cap)


def test_backoff_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        Backoff().delay(0)


# --- watchdog ---------------------------------------------------------------------------------


def test_no_alarm_while_nothing_waits_however_long_since_the_last_ack() -> None:
    clock, dog = FakeClock(), DeliveryWatchdog(timeout_s=30)
    dog.message_pending(clock.now)
    dog.acked(clock.advance(1))
    assert not dog.raise_due(clock.advance(3600))  # idle for an hour: nothing pending


def test_alarm_due_once_the_pending_message_waited_the_timeout() -> None:
    clock, dog = FakeClock(), DeliveryWatchdog(timeout_s=30)
    dog.message_pending(clock.now)
    assert not dog.raise_due(clock.advance(29.99))
    dog.message_pending(clock.now)  # a resend does not restart the wait
    assert dog.raise_due(clock.advance(0.01))
    assert dog.waiting_s(clock.now) == pytest.approx(30.0)


def test_each_acked_message_restarts_the_wait() -> None:
    clock, dog = FakeClock(), DeliveryWatchdog(timeout_s=30)
    for _ in range(10):  # a slow but acknowledging receiver: 20 s per message
        dog.message_pending(clock.now)
        clock.advance(20)
        assert not dog.raise_due(clock.now)
        dog.acked(clock.now)
    assert not dog.alarm_active


def test_raised_once_then_ended_by_the_first_ack_after_it() -> None:
    clock, dog = FakeClock(), DeliveryWatchdog(timeout_s=5)
    dog.message_pending(clock.now)
    start = clock.now
    assert dog.raise_due(clock.advance(5))
    dog.mark_raised(clock.now)
    assert dog.onset == start
    assert dog.alarm_active
    for _ in range(100):  # the receiver stays away: no second start, no end
        clock.advance(1)
        assert not dog.raise_due(clock.now)
        assert not dog.clear_due()
    dog.acked(clock.advance(1))
    assert dog.clear_due()
    dog.mark_cleared()
    assert not dog.alarm_active
    assert not dog.clear_due()
    dog.message_pending(clock.now)  # a new outage is a new alarm
    assert dog.raise_due(clock.advance(5))


def test_an_alarm_not_yet_published_stays_due() -> None:
    clock, dog = FakeClock(), DeliveryWatchdog(timeout_s=5)
    dog.message_pending(clock.now)
    assert dog.raise_due(clock.advance(6))
    # publishing failed (Kafka away): not marked, so still due at the next look
    assert dog.raise_due(clock.advance(1))


def test_watchdog_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        DeliveryWatchdog(timeout_s=0)


# --- the technical alert ----------------------------------------------------------------------


def _start(destination: str = "tele.example.org:2575", onset: datetime = T0) -> AlertEvent:
    at = onset + timedelta(seconds=31)
    return delivery_alert(
        destination,
        AlertPhase.START,
        onset=onset,
        at=at,
        raised_at=at,
        waited_s=31.0,
        timeout_s=30.0,
        priority=AlertPriority.HIGH,
        site="NORTH",
    )


def test_delivery_alert_is_a_technical_alert_with_deterministic_ids() -> None:
    first, again = _start(), _start()
    assert first == again  # a restarted sender raising the same episode: same ids
    assert first.kind == "technical"
    assert first.rule_id == DELIVERY_RULE_ID
    assert (first.phase, first.sequence, first.priority, first.site) == (
        "start",
        0,
        "high",
        "NORTH",
    )
    assert first.values == {"seconds_since_last_ack": 31.0}
    assert first.thresholds == {"seconds_since_last_ack": 30.0}
    assert "tele.example.org:2575" in first.title
    assert _start(onset=T0 + timedelta(seconds=1)).alert_id != first.alert_id
    assert _start(destination="other:2575").alert_id != first.alert_id
    # round-trips as a contract (what goes on the alerts topic)
    assert AlertEvent.model_validate_json(first.model_dump_json()) == first


def test_delivery_alert_end_shares_the_alert_id() -> None:
    start = _start()
    end = delivery_alert(
        "tele.example.org:2575",
        AlertPhase.END,
        onset=start.condition_since,
        at=T0 + timedelta(minutes=3),
        raised_at=T0 + timedelta(minutes=3),
        waited_s=0.0,
        timeout_s=30.0,
        priority=AlertPriority.HIGH,
    )
    assert end.alert_id == start.alert_id
    assert end.event_id != start.event_id
    assert (end.phase, end.sequence, end.reason) == ("end", 1, "resolved")


def test_delivery_alert_has_no_update_phase() -> None:
    with pytest.raises(ValueError, match="starts and ends"):
        delivery_alert(
            "x:1",
            AlertPhase.UPDATE,
            onset=T0,
            at=T0,
            raised_at=T0,
            waited_s=0,
            timeout_s=1,
            priority=AlertPriority.LOW,
        )
