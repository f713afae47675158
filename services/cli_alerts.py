"""``vigil alerts``: alert events for displays and remote telemetry centres."""

from __future__ import annotations

import json

import click

from schemas.alerts import AlertEvent
from services.cli_common import load_settings


@click.group("alerts")
def alerts_group() -> None:
    """Alert events."""


@alerts_group.command("tail")
@click.option("--json", "as_json", is_flag=True, help="One JSON alert event per line")
@click.option("--max", "max_events", type=click.IntRange(1), default=None, help="Stop after N")
@click.option("--timeout", type=float, default=None, help="Stop after S seconds without events")
@click.option("--from-beginning", is_flag=True, help="Read the topic from its start")
@click.option("--group", default=None, help="Consumer group (remote centres: one per centre)")
@click.option("--site", "sites", multiple=True, help="Only this site (repeatable)")
@click.option("--unit", "units", multiple=True, help="Only this care unit (repeatable)")
@click.option(
    "--priority",
    type=click.Choice(["low", "medium", "high"]),
    default=None,
    help="Minimum priority (medium: medium and high)",
)
def alerts_tail(
    as_json: bool,
    max_events: int | None,
    timeout: float | None,
    from_beginning: bool,
    group: str | None,
    sites: tuple[str, ...],
    units: tuple[str, ...],
    priority: str | None,
) -> None:
    """Print alert events as they are published.

    Remote telemetry centres: give your centre its own --group, so the position
    survives restarts and several centres each get every event (docs/remote-centres.md).
    Records that are not alert events are always shown, whatever the filters.
    """
    from services.alerts_tail import AlertFilter, format_alert, tail_alerts

    alert_filter = AlertFilter.of(sites=sites, units=units, min_priority=priority)
    settings = load_settings()
    try:
        for item in tail_alerts(
            settings.bootstrap_servers,
            settings.topics.alerts,
            from_beginning=from_beginning,
            max_events=max_events,
            timeout_s=timeout,
            group_id=group,
            alert_filter=None if alert_filter.is_empty else alert_filter,
        ):
            if isinstance(item, AlertEvent):
                click.echo(item.model_dump_json() if as_json else format_alert(item))
            else:
                click.echo(
                    json.dumps({"invalid_alert_record": item.decode("utf-8", "replace")})
                    if as_json
                    else f"(not an alert event: {item[:80]!r})",
                    err=not as_json,
                )
    except KeyboardInterrupt:
        pass
