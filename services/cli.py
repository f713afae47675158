"""The ``vigil`` command line."""

from __future__ import annotations

import sys
import threading
from datetime import datetime
from pathlib import Path

import click

from services.cli_common import load_settings
from services.cli_kafka import kafka_group


@click.group()
@click.version_option(package_name="vigil")
def main() -> None:
    """Vigil: real-time early warning of multi-organ dysfunction in the ICU."""
    from services.observability import configure_logging

    configure_logging(load_settings().log_level)  # VIGIL_LOG_FORMAT=json|text; redacts ids


main.add_command(kafka_group)


def _register_commands() -> None:
    from services.cli_acm import acm_group
    from services.cli_alerts import alerts_group
    from services.cli_display import display_group
    from services.cli_evaluate import evaluate_alerts
    from services.cli_hl7 import hl7_group
    from services.cli_ingest import context_group, crrt_group, listen_all, nirs_group
    from services.cli_record import record
    from services.cli_replay import replay
    from services.cli_risk import evaluate_physionet, model_group, risk

    for command in (
        hl7_group,
        nirs_group,
        crrt_group,
        context_group,
        listen_all,
        replay,
        record,
        alerts_group,
        acm_group,
        display_group,
        evaluate_group,
        risk,
        model_group,
    ):
        main.add_command(command)
    evaluate_group.add_command(evaluate_alerts)
    evaluate_group.add_command(evaluate_physionet)


@click.group("evaluate")
def evaluate_group() -> None:
    """Score what the monitor did against ground truth (reports with plots)."""


_register_commands()


@main.group("topics")
def topics_group() -> None:
    """Kafka topics of this deployment (names carry VIGIL_TOPIC_PREFIX)."""


@topics_group.command("create")
def topics_create() -> None:
    """Create every topic of the registry that does not exist yet."""
    from services.kafka_io import TopicLayoutError, create_topics

    settings = load_settings()
    try:
        created, existing = create_topics(settings.bootstrap_servers, settings.topics)
    except TopicLayoutError as exc:
        raise click.ClickException(str(exc)) from exc
    for name in created:
        click.echo(f"created {name}")
    for name in existing:
        click.echo(f"exists  {name}")


@topics_group.command("list")
def topics_list() -> None:
    """Print the registry: name, key, partitions, retention."""
    registry = load_settings().topics
    for spec in registry:
        retention = (
            "forever" if spec.retention_ms == -1 else f"{(spec.retention_ms or 0) // 86400000} d"
        )
        click.echo(
            f"{registry.name(spec.base_name):<24} key={spec.key:<11} "
            f"partitions={registry.partitions_of(spec.base_name):<3} retention={retention:<8} "
            f"{spec.payload.__name__}"
        )


@main.group("schemas")
def schemas_group() -> None:
    """JSON Schemas of the topic payloads."""


@schemas_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schemas_export(directory: Path) -> None:
    """Write one JSON Schema file per topic payload into DIRECTORY."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        click.echo(str(path))


def _speed(_ctx: click.Context, _param: click.Parameter, value: str) -> float | None:
    from services.sim_publisher import parse_speed

    try:
        return parse_speed(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@main.command("simulate")
@click.option("--beds", type=click.IntRange(1, 100000), default=8, show_default=True)
@click.option(
    "--speed",
    default="10",
    show_default=True,
    callback=_speed,
    help="Event time runs this many times faster than the wall clock; 'max' = no pacing",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%SZ"]),
    default=None,
    help="Event time of the first sample (ISO 8601 with offset); default now",
)
@click.option("--duration", type=click.IntRange(1), default=None, help="Simulated seconds")
@click.option(
    "--scenario",
    "scenario_specs",
    multiple=True,
    metavar="NAME:bed=B,onset=S,duration=S[,severity=X][,side=left|right][,device=D]",
    help="Add a scenario (repeatable); it replaces the default scenarios of its bed",
)
@click.option(
    "--scenarios",
    "scenarios_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML file of [[scenario]] tables (name, bed, onset, duration, severity, ...)",
)
@click.option(
    "--no-default-scenarios",
    is_flag=True,
    help="Play only the scenarios given (and the --hypotension-* episode if given)",
)
@click.option(
    "--hypotension-bed",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Bed with the scripted hypotension episode (0 = none)",
)
@click.option("--hypotension-onset", type=float, default=120.0, show_default=True)
@click.option("--hypotension-duration", type=float, default=600.0, show_default=True)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write ground-truth annotations (GroundTruth JSON lines) here",
)
@click.pass_context
def simulate_cmd(
    ctx: click.Context,
    beds: int,
    speed: float | None,
    seed: int,
    start: datetime | None,
    duration: int | None,
    scenario_specs: tuple[str, ...],
    scenarios_file: Path | None,
    no_default_scenarios: bool,
    hypotension_bed: int,
    hypotension_onset: float,
    hypotension_duration: float,
    truth: Path | None,
) -> None:
    """Publish a simulated ICU: vitals, NIRS, CRRT, labs, context and ground truth.

    Scenarios: hypotension, septic_shock, venous_congestion_aki, cerebral_desaturation,
    crrt_filter_clotting, device_disconnect and the artefact_* kinds.
    """
    from datetime import UTC

    from services.kafka_io import TopicLayoutError
    from services.sim import IcuConfig, wall_clock
    from services.sim.scenarios import plan_from_options
    from services.sim_publisher import run_simulation

    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    hypotension_given = any(
        ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        for name in ("hypotension_bed", "hypotension_onset", "hypotension_duration")
    )
    try:
        plan = plan_from_options(
            beds=beds,
            seed=seed,
            duration_s=duration,
            specs=scenario_specs,
            scenarios_file=scenarios_file,
            defaults=not no_default_scenarios,
            hypotension=(hypotension_bed, hypotension_onset, hypotension_duration),
            hypotension_explicit=hypotension_given,
        )
        config = IcuConfig(
            beds=beds,
            seed=seed,
            start=start or wall_clock().replace(microsecond=0),
            duration_s=duration,
            scenarios=plan,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    settings = load_settings()
    if truth is not None:
        from services.sim import write_ground_truth

        write_ground_truth(config, truth)
    stop = threading.Event()
    _stop_on_sigterm(stop)
    click.echo(
        f"simulating {beds} beds ({len(config.played())} scenarios, run {config.run}) at "
        f"{'max' if speed is None else f'{speed:g}x'} speed into "
        f"{settings.topics.prefix}*, first sample at {config.start.isoformat()}",
        err=True,
    )
    try:
        stats = run_simulation(
            config, settings.bootstrap_servers, settings.topics, speed=speed, stop=stop
        )
    except TopicLayoutError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        stop.set()
        return
    click.echo(stats.summary(), err=True)
    if stats.failures:
        sys.exit(1)


def _stop_on_sigterm(stop: threading.Event) -> None:
    import signal

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)


@main.command("worker")
@click.option(
    "--rules",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Rules file (default: the packaged streams/rules/default.toml)",
)
def worker_cmd(rules: Path | None) -> None:
    """Run the stream worker (faust): features, alarms, alerts."""
    from services.kafka_io import TopicLayoutError
    from services.worker import run_worker
    from streams.rules import RulesError

    try:
        run_worker(load_settings(), rules)
    except (RulesError, TopicLayoutError) as exc:
        raise click.ClickException(str(exc)) from exc


@main.command("run")
@click.option("--beds", type=click.IntRange(1), default=8, show_default=True)
@click.option("--speed", default="10", show_default=True, help="Simulator speed factor or 'max'")
@click.option(
    "--seconds",
    type=float,
    default=None,
    envvar="RUN_SECONDS",
    help="Stop after this many seconds (env RUN_SECONDS); default: until Ctrl-C",
)
def run_cmd(beds: int, speed: str, seconds: float | None) -> None:
    """The embedded default: local Kafka, worker and a simulated ICU; prints alerts."""
    from services.run import run_system

    sys.exit(run_system(load_settings(), beds=beds, speed=speed, seconds=seconds))


if __name__ == "__main__":
    main()
