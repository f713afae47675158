"""``vigil alerts tail``: print alert events from the alerts topic."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from schemas.alerts import AlertEvent, AlertPriority

log = logging.getLogger(__name__)
_COMMIT_INTERVAL_S = 5.0

PRIORITY_RANK = {AlertPriority.LOW: 0, AlertPriority.MEDIUM: 1, AlertPriority.HIGH: 2}


@dataclass(frozen=True)
class AlertFilter:
    """Which alert events a remote centre wants: its sites, its units, a minimum priority.

    Empty sets mean "any"; names compare case-insensitively; an event without a site
    (or unit) never matches a site (unit) filter. ``min_priority`` keeps that priority
    and above (``medium`` keeps medium and high).

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> a = AlertEvent(event_id="e", alert_id="a", sequence=0, patient_id="p1", site="North",
    ...     care_unit="ICU1", phase="start", priority="medium", rule_id="r", rule_version=1,
    ...     title="t", values={}, thresholds={}, condition_since=t, triggered_at=t,
    ...     raised_at=t, explanation=(), source="s")
    >>> AlertFilter.of(sites=["north"], min_priority="medium").matches(a)
    True
    >>> AlertFilter.of(units=["ICU2"]).matches(a), AlertFilter.of(min_priority="high").matches(a)
    (False, False)
    """

    sites: frozenset[str] = frozenset()
    units: frozenset[str] = frozenset()
    min_priority: AlertPriority | None = None

    @classmethod
    def of(
        cls,
        *,
        sites: Iterable[str] = (),
        units: Iterable[str] = (),
        min_priority: AlertPriority | str | None = None,
    ) -> AlertFilter:
        return cls(
            frozenset(s.casefold() for s in sites),
            frozenset(u.casefold() for u in units),
            None if min_priority is None else AlertPriority(min_priority),
        )

    @property
    def is_empty(self) -> bool:
        return not self.sites and not self.units and self.min_priority is None

    def matches(self, alert: AlertEvent) -> bool:
        """Whether ``alert`` passes every filter given."""
        if self.sites and (alert.site is None or alert.site.casefold() not in self.sites):
            return False
        if self.units and (alert.care_unit is None or alert.care_unit.casefold() not in self.units):
            return False
        return self.min_priority is None or (
            PRIORITY_RANK[alert.priority] >= PRIORITY_RANK[self.min_priority]
        )


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
    alert_filter: AlertFilter | None = None,
) -> Iterator[AlertEvent | bytes]:
    """Yield alert events that pass ``alert_filter`` (and the raw bytes of any record
    that is not an alert event: never hidden by a filter).

    Stops after ``max_events`` yielded, after ``timeout_s`` seconds without a new
    yielded item, or when ``should_stop()`` is true. With a ``group_id`` the group's
    committed position is used, and advanced past exactly the records handled (yielded
    or filtered out), every few seconds and at the end: a run stopped by ``--max``
    leaves the rest of the fetched batch to the group's next run.
    """
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        client_id="vigil-cli",
        group_id=group_id,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    handled: dict[TopicPartition, int] = {}
    committed: dict[TopicPartition, int] = {}

    def commit() -> None:
        todo = {tp: o for tp, o in handled.items() if committed.get(tp) != o}
        if group_id is None or not todo:
            return
        try:
            consumer.commit({tp: OffsetAndMetadata(o, None, -1) for tp, o in todo.items()})
        except KafkaError as exc:  # a rebalance: the next run sees these records again
            log.warning("alert tail: offset commit failed: %s", exc)
            return
        committed.update(todo)

    try:
        seen = 0
        last_event: float | None = None  # the timeout counts from the first poll's answer
        last_commit = time.monotonic()
        while not should_stop():
            if max_events is not None and seen >= max_events:
                return
            if (
                timeout_s is not None
                and last_event is not None
                and time.monotonic() - last_event > timeout_s
            ):
                return
            if time.monotonic() - last_commit > _COMMIT_INTERVAL_S:
                commit()
                last_commit = time.monotonic()
            batches = consumer.poll(timeout_ms=200)
            if last_event is None:
                last_event = time.monotonic()
            for tp, records in batches.items():
                for record in records:
                    raw = bytes(record.value or b"")
                    try:
                        alert = AlertEvent.model_validate_json(raw)
                    except ValidationError:
                        item: AlertEvent | bytes = raw
                    else:
                        if alert_filter is not None and not alert_filter.matches(alert):
                            handled[tp] = record.offset + 1
                            continue
                        item = alert
                    last_event = time.monotonic()
                    seen += 1
                    yield item
                    handled[tp] = record.offset + 1
                    if max_events is not None and seen >= max_events:
                        return
    finally:
        commit()
        consumer.close()
