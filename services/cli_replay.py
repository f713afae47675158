"""``vigil replay``: real datasets as paced, event-timed records on the raw topics."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from services.cli_common import load_settings

if TYPE_CHECKING:
    from services.replay.source import ReplaySource


def _speed(_ctx: click.Context, _param: click.Parameter, value: str) -> float | None:
    from services.sim_publisher import parse_speed

    try:
        return parse_speed(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def parse_start(text: str | None) -> datetime:
    """The anchor: ``now`` (whole seconds), an ISO 8601 instant with offset, or the default.

    >>> parse_start("2026-03-01T08:00:00+01:00").isoformat()
    '2026-03-01T07:00:00+00:00'
    >>> parse_start(None).isoformat()
    '2025-01-01T00:00:00+00:00'
    """
    from services.replay.common import DEFAULT_START

    if text is None:
        return DEFAULT_START
    if text.strip().lower() == "now":
        return datetime.now(UTC).replace(microsecond=0)
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        raise ValueError("give a UTC offset, e.g. 2026-03-01T08:00:00Z")
    return parsed.astimezone(UTC)


def _start(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime:
    try:
        return parse_start(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("replay")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--speed",
    default="max",
    show_default=True,
    callback=_speed,
    help="Event time runs this many times faster than the wall clock; 'max' = no pacing",
)
@click.option(
    "--start",
    default=None,
    callback=_start,
    help="Anchor (ICU admission / record start of every patient): ISO 8601 with offset or"
    " 'now'; default 2025-01-01T00:00:00Z",
)
@click.option("--patients", type=click.IntRange(1), default=None, help="First N patients by id")
@click.option("--patient", "only", multiple=True, help="Only this patient id (repeatable)")
@click.option("--dry-run", is_flag=True, help="Print JSON lines (topic, key, value); no Kafka")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress line on stderr (default: when stderr is a terminal)",
)
def replay(
    source: Path,
    speed: float | None,
    start: datetime,
    patients: int | None,
    only: tuple[str, ...],
    dry_run: bool,
    progress: bool | None,
) -> None:
    """Replay SOURCE (PhysioNet 2019 .tar.gz/.psv folder, MIMIC-III demo folder, MIMIC-II
    numerics .csv) as validated, coded records on the vitals, labs, context and crrt topics."""
    from services.replay.source import TOPICS_BY_KIND, UnknownSourceError, open_source

    try:
        opened = open_source(
            source, start=start, patients=patients, only=frozenset(only) if only else None
        )
    except UnknownSourceError as exc:
        raise click.BadParameter(str(exc), param_hint="SOURCE") from exc
    if dry_run:
        out = click.get_text_stream("stdout")
        for record in opened.records:
            out.write(
                f'{{"topic":"{record.topic}","key":"{record.key}","value":'
                f"{record.payload.model_dump_json()}}}\n"
            )
        click.echo(f"skipped source rows: {opened.skips.summary()}", err=True)
        return
    _publish(opened, TOPICS_BY_KIND[opened.kind], speed, progress)


def _publish(
    opened: ReplaySource, topics: tuple[str, ...], speed: float | None, progress: bool | None
) -> None:
    from kafka.errors import KafkaError

    from services.kafka_io import TopicLayoutError, check_topics, reliable_producer
    from services.replay.publish import Progress, publish_records

    settings = load_settings()
    try:
        check_topics(settings.bootstrap_servers, settings.topics, topics)
    except (TopicLayoutError, KafkaError) as exc:
        raise click.ClickException(f"cannot replay: {exc}") from exc
    show = sys.stderr.isatty() if progress is None else progress
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    producer = reliable_producer(settings.bootstrap_servers, client_id="vigil-replay")
    click.echo(
        f"replaying {opened.kind}: {opened.patients} patients at "
        f"{'max' if speed is None else f'{speed:g}x'} speed into {settings.topics.prefix}*",
        err=True,
    )
    try:
        stats = publish_records(
            opened.records,
            producer,
            settings.topics,
            speed=speed,
            stop=stop,
            progress=Progress() if show else None,
        )
    finally:
        producer.close()
    click.echo(
        f"{'interrupted: ' if stats.interrupted else ''}published {stats.summary()}", err=True
    )
    click.echo(f"skipped source rows: {opened.skips.summary()}", err=True)
    if stats.failures:
        sys.exit(1)
    if stats.interrupted:
        sys.exit(130)


if __name__ == "__main__":
    replay()
