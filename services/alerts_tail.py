"""``vigil alerts tail``: print alert events from the alerts topic."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from pydantic import ValidationError

from schemas.alerts import AlertEvent
from services.kafka_io import topic_consumer


def format_alert(alert: AlertEvent) -> str:
    """One human-readable line per alert event.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)
    >>> a = AlertEvent(event_id="e", alert_id="a", sequence=0, patient_id="p1", bed="ICU1-02",
    ...     phase="start", priority="medium", rule_id="perfusion.map_low", rule_version=1,
    ...     title="MAP below 65 mmHg", values={"map_median_1min_mmhg": 58.0},
    ...     thresholds={"map_median_1min_mmhg": 65.0}, condition_since=t, triggered_at=t,
    ...     raised_at=t, explanation=(), source="CLINICAL.md")
    >>> line = format_alert(a)
    >>> line.startswith("2026-01-01T12:05:00Z START  MEDIUM ICU1-02  p1  MAP below 65 mmHg")
    True
    >>> line.endswith("[map_median_1min_mmhg=58 (threshold 65)]  perfusion.map_low v1")
    True
    """
    values = ", ".join(
        f"{name}={'unknown' if v is None else f'{v:g}'}"
        + (f" (threshold {alert.thresholds[name]:g})" if name in alert.thresholds else "")
        for name, v in alert.values.items()
        if name in alert.thresholds
    )
    when = alert.triggered_at.isoformat().replace("+00:00", "Z")
    return (
        f"{when} {alert.phase.upper():<6} {alert.priority.upper():<6} {alert.bed or '-':<8} "
        f"{alert.patient_id}  {alert.title}  [{values}]  {alert.rule_id} v{alert.rule_version}"
    )


def tail_alerts(
    bootstrap_servers: str,
    topic: str,
    *,
    from_beginning: bool,
    max_events: int | None,
    timeout_s: float | None,
    group_id: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[AlertEvent | bytes]:
    """Yield alert events (or the raw bytes of a record that is not one).

    Stops after ``max_events``, after ``timeout_s`` seconds without a new event, or
    when ``should_stop()`` is true.
    """
    consumer = topic_consumer(
        bootstrap_servers, topic, from_beginning=from_beginning, group_id=group_id
    )
    try:
        seen = 0
        last_event: float | None = None  # the timeout counts from the first poll's answer
        while not should_stop():
            if max_events is not None and seen >= max_events:
                return
            if (
                timeout_s is not None
                and last_event is not None
                and time.monotonic() - last_event > timeout_s
            ):
                return
            batches = consumer.poll(timeout_ms=200)
            if last_event is None:
                last_event = time.monotonic()
            for records in batches.values():
                for record in records:
                    last_event = time.monotonic()
                    seen += 1
                    try:
                        yield AlertEvent.model_validate_json(record.value)
                    except ValidationError:
                        yield bytes(record.value)
                    if max_events is not None and seen >= max_events:
                        return
    finally:
        consumer.close()
