"""Retry back-off and the delivery watchdog of the PCD-04 sender (pure, clock injected).

A distributed alarm system must signal when delivery fails (IEC 60601-1-8; CLINICAL.md
"Alarm management"). :class:`DeliveryWatchdog` tracks the oldest message waiting for
the receiver's commit ACK: once none has arrived for ``timeout_s`` seconds while a
message is pending, a technical alert is due (:func:`delivery_alert`, phase start);
the first ACK after that makes its end due. Times are plain seconds of a monotonic
clock the caller passes in, so tests drive it without sleeping.

>>> dog = DeliveryWatchdog(timeout_s=30)
>>> dog.message_pending(100.0)
>>> dog.raise_due(129.9), dog.raise_due(130.0)
(False, True)
>>> dog.mark_raised(130.0)
>>> dog.acked(131.0)
>>> dog.clear_due(), dog.raise_due(500.0)
(True, False)
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from schemas.alerts import AlertEvent, AlertPhase, AlertPriority, AlertReason

DELIVERY_RULE_ID = "acm.delivery_failed"
DELIVERY_NAMESPACE = uuid.UUID("0c7f6a0e-5d0b-4f43-9a53-6b1f7e2d4a11")
"""uuid5 namespace of the delivery-failure alert ids (deterministic, like every alert id)."""

DELIVERY_SOURCE = (
    "CLINICAL.md Alarm management: a distributed alarm system must signal when delivery "
    "fails (IEC 60601-1-8); timeout configurable (--watchdog), default 30 s unverified"
)


@dataclass
class Backoff:
    """Exponential back-off with jitter: attempt n waits between half and all of
    ``min(cap_s, base_s * 2**(n-1))`` ("equal jitter"), so senders that lost the same
    receiver do not retry in step.

    >>> b = Backoff(base_s=0.5, cap_s=8.0, rng=lambda: 1.0)
    >>> [b.delay(n) for n in range(1, 7)]
    [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    >>> Backoff(base_s=0.5, cap_s=8.0, rng=lambda: 0.0).delay(3)
    1.0
    """

    base_s: float = 0.5
    cap_s: float = 30.0
    rng: Callable[[], float] = field(default=random.random, repr=False)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("back-off needs 0 < base_s <= cap_s")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = the first retry)."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempt - 1, 60))
        return ceiling / 2 + self.rng() * ceiling / 2


@dataclass
class DeliveryWatchdog:
    """When has the receiver stopped acknowledging, and when has delivery resumed."""

    timeout_s: float
    pending_since: float | None = None  # the current message has waited since then
    last_ack: float | None = None
    raised_at: float | None = None  # the delivery alarm is active since then
    onset: float | None = None  # when the unacknowledged wait that raised it began

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError("the watchdog timeout must be positive")

    @property
    def alarm_active(self) -> bool:
        return self.raised_at is not None

    def message_pending(self, now: float) -> None:
        """A message was handed to the receiver and waits for its ACK."""
        if self.pending_since is None:
            self.pending_since = now

    def acked(self, now: float) -> None:
        """The receiver committed the pending message."""
        self.last_ack = now
        self.pending_since = None

    def waiting_s(self, now: float) -> float:
        """How long the pending message has waited for its ACK (0 when none is pending)."""
        return 0.0 if self.pending_since is None else max(0.0, now - self.pending_since)

    def raise_due(self, now: float) -> bool:
        """No ACK for ``timeout_s`` while a message is pending, and no alarm yet."""
        return not self.alarm_active and self.waiting_s(now) >= self.timeout_s

    def mark_raised(self, now: float) -> None:
        """The start of the delivery alarm is published."""
        self.onset = self.pending_since if self.pending_since is not None else now
        self.raised_at = now

    def clear_due(self) -> bool:
        """The alarm is active and a message was acknowledged after it was raised."""
        return (
            self.raised_at is not None
            and self.last_ack is not None
            and self.last_ack >= self.raised_at
        )

    def mark_cleared(self) -> None:
        """The end of the delivery alarm is published."""
        self.raised_at = None
        self.onset = None


def delivery_alert(
    destination: str,
    phase: AlertPhase,
    *,
    onset: datetime,
    at: datetime,
    raised_at: datetime,
    waited_s: float,
    timeout_s: float,
    priority: AlertPriority,
    site: str | None = None,
) -> AlertEvent:
    """The technical alert "alarm delivery to ``destination`` failing" (start or end).

    Ids are deterministic: the same destination and onset give the same alert id, so a
    restarted sender that raises the same episode again is dropped as a duplicate.

    >>> from datetime import UTC, datetime, timedelta
    >>> t0 = datetime(2026, 5, 1, 14, 0, tzinfo=UTC)
    >>> start = delivery_alert("tele.example:2575", AlertPhase.START, onset=t0,
    ...     at=t0 + timedelta(seconds=30), raised_at=t0 + timedelta(seconds=30),
    ...     waited_s=30.0, timeout_s=30.0, priority=AlertPriority.MEDIUM)
    >>> start.kind, start.rule_id, start.patient_id, start.values
    ('technical', 'acm.delivery_failed', 'system:acm', {'seconds_since_last_ack': 30.0})
    >>> end = delivery_alert("tele.example:2575", AlertPhase.END, onset=t0, at=t0, raised_at=t0,
    ...     waited_s=0.0, timeout_s=30.0, priority=AlertPriority.MEDIUM)
    >>> end.alert_id == start.alert_id, end.event_id == start.event_id, end.sequence
    (True, False, 1)
    """
    if phase not in (AlertPhase.START, AlertPhase.END):
        raise ValueError("a delivery alarm only starts and ends")
    onset_ms = round(onset.timestamp() * 1000)
    alert_id = str(uuid.uuid5(DELIVERY_NAMESPACE, f"{DELIVERY_RULE_ID}|{destination}|{onset_ms}"))
    sequence = 0 if phase is AlertPhase.START else 1
    event_id = str(uuid.uuid5(DELIVERY_NAMESPACE, f"{alert_id}|{sequence}|{phase}"))
    started = phase is AlertPhase.START
    return AlertEvent(
        event_id=event_id,
        alert_id=alert_id,
        sequence=sequence,
        patient_id="system:acm",
        site=site,
        phase=phase,
        priority=priority,
        kind="technical",
        rule_id=DELIVERY_RULE_ID,
        rule_version=1,
        title=f"Alarm delivery to {destination} failing"[:128],
        values={"seconds_since_last_ack": round(waited_s, 3)},
        thresholds={"seconds_since_last_ack": timeout_s},
        condition_since=onset,
        triggered_at=at,
        raised_at=raised_at,
        explanation=(
            f"no commit ACK from {destination} for {waited_s:.0f} s while alerts wait"
            f" (limit {timeout_s:g} s); alerts are kept and resent, none dropped"
            if started
            else f"{destination} acknowledges again; the waiting alerts are being delivered",
        ),
        source=DELIVERY_SOURCE,
        reason=AlertReason.ONSET if started else AlertReason.RESOLVED,
    )
