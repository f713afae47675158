"""``vigil acm``: IHE PCD-04 (ACM) alert delivery to remote alarm managers over MLLP."""

from __future__ import annotations

import re
import signal
import threading

import click

from services.cli_common import load_settings

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\s]+):(?P<port>\d{1,5})$")


def parse_destination(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) as (host, port); ``click.BadParameter`` otherwise.

    >>> parse_destination("tele.example.org:2575")
    ('tele.example.org', 2575)
    >>> parse_destination("[::1]:2575")
    ('::1', 2575)
    """
    match = _HOST_PORT.match(value.strip())
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="--to")
    return match["host"].strip("[]"), port


@click.group("acm")
def acm_group() -> None:
    """IHE PCD-04 alarm messages (ORU^R40 over MLLP) to remote alarm managers."""


@acm_group.command("send")
@click.option("--to", "to", required=True, help="HOST:PORT of the receiver's MLLP listener")
@click.option("--group", default=None, help="Consumer group (default: one per destination)")
@click.option("--from-beginning", is_flag=True, help="A new group starts at the topic's start")
@click.option("--site", "sites", multiple=True, help="Only alerts of this site (repeatable)")
@click.option("--unit", "units", multiple=True, help="Only alerts of this care unit (repeatable)")
@click.option(
    "--priority",
    type=click.Choice(["low", "medium", "high"]),
    default=None,
    help="Minimum priority sent",
)
@click.option("--ack-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@click.option(
    "--watchdog",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds without a commit ACK, while alerts wait, before the technical alarm",
)
@click.option(
    "--watchdog-priority",
    type=click.Choice(["low", "medium", "high"]),
    default="medium",
    show_default=True,
)
@click.option("--backoff-max", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
@click.option(
    "--keepalive",
    type=click.FloatRange(min=0.0),
    default=30.0,
    show_default=True,
    help="Idle seconds before a watchdog ORU^R40 (as Draeger's PCD04_watchdog; 0: none)",
)
@click.option("--eui64", default=None, help="This reporter's EUI-64 (16 hex digits), MSH-3")
@click.option("--receiving-application", default="", help="MSH-5")
@click.option("--receiving-facility", default="", help="MSH-6")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=9110,
    show_default=True,
    help="Prometheus /metrics (0: none)",
)
@click.option("--max", "max_messages", type=click.IntRange(1), default=None, help="Stop after N")
def acm_send(
    to: str,
    group: str | None,
    from_beginning: bool,
    sites: tuple[str, ...],
    units: tuple[str, ...],
    priority: str | None,
    ack_timeout: float,
    watchdog: float,
    watchdog_priority: str,
    backoff_max: float,
    keepalive: float,
    eui64: str | None,
    receiving_application: str,
    receiving_facility: str,
    metrics_port: int,
    max_messages: int | None,
) -> None:
    """Send every alert event to HOST:PORT as an ORU^R40, committing only after its ACK.

    Resends with back-off until the receiver commits each message (nothing dropped);
    raises the technical alert acm.delivery_failed on the alerts topic when no ACK
    arrives for --watchdog seconds while alerts wait, and ends it when deliveries resume.
    """
    from schemas.alerts import AlertPriority
    from services.acm.oru_r40 import ReporterIdentity
    from services.acm.sender import AcmSender, SenderConfig, default_group
    from services.alerts_tail import AlertFilter
    from services.kafka_io import TopicLayoutError, check_topics
    from services.observability import Probes, serve_probes

    host, port = parse_destination(to)
    settings = load_settings()
    try:
        default_eui = ReporterIdentity.default_eui64(f"vigil|{settings.topic_prefix}")
        reporter = ReporterIdentity(
            eui64=(eui64 or default_eui).upper(),
            receiving_application=receiving_application,
            receiving_facility=receiving_facility,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--eui64") from exc
    config = SenderConfig(
        host=host,
        port=port,
        ack_timeout_s=ack_timeout,
        watchdog_s=watchdog,
        watchdog_priority=AlertPriority(watchdog_priority),
        backoff_cap_s=max(backoff_max, 0.5),
        keepalive_s=keepalive,
        alert_filter=AlertFilter.of(sites=sites, units=units, min_priority=priority),
        site=sites[0] if len(sites) == 1 else None,
    )
    try:
        check_topics(settings.bootstrap_servers, settings.topics, ["alerts", "deadletter"])
    except TopicLayoutError as exc:
        raise click.ClickException(str(exc)) from exc
    probes = Probes()  # /metrics, /healthz, /readyz; checks added once the sender exists
    if metrics_port:
        serve_probes(settings.metrics_host, metrics_port, probes)
    stop = threading.Event()
    previous_handler = None
    if threading.current_thread() is threading.main_thread():

        def handler(_signum: int, _frame: object) -> None:
            stop.set()

        previous_handler = signal.signal(signal.SIGTERM, handler)
    group_id = group or default_group(host, port)
    click.echo(f"sending alerts to {config.destination} (consumer group {group_id})", err=True)
    sender = AcmSender(
        config,
        reporter,
        bootstrap_servers=settings.bootstrap_servers,
        topics=settings.topics,
        group_id=group_id,
        from_beginning=from_beginning,
    )
    probes.alive("sender_loop", sender.live)
    probes.ready("kafka", sender.ready)
    try:
        delivered = sender.run(should_stop=stop.is_set, max_messages=max_messages)
    except KeyboardInterrupt:
        stop.set()
        delivered = sender.delivered
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    click.echo(f"{delivered} alert events delivered to {config.destination}", err=True)
