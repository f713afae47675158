"""``vigil replay``: recordings (``vigil record``) and real datasets as paced, event-timed
records on their topics."""

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
    from click._termui_impl import ProgressBar

    from services.config import Settings
    from services.recording import Recording
    from services.replay.recorded import RecordingReplayStats
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
    help="Progress on stderr (default: when stderr is a terminal)",
)
@click.option(
    "--shift-to-now",
    is_flag=True,
    help="Recordings: move every payload timestamp so the first record happens now",
)
@click.option(
    "--keep-received-at",
    is_flag=True,
    help="Recordings: send received_at as recorded (default: restamp with the send time)",
)
@click.option(
    "--reorder-window",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    help="Recordings: records held to put the file into event-time order (memory bound)",
)
@click.pass_context
def replay(
    ctx: click.Context,
    source: Path,
    speed: float | None,
    start: datetime,
    patients: int | None,
    only: tuple[str, ...],
    dry_run: bool,
    progress: bool | None,
    shift_to_now: bool,
    keep_received_at: bool,
    reorder_window: int,
) -> None:
    """Replay SOURCE: a recording made by `vigil record` (onto the topics it was recorded
    from, in this deployment's prefix), or a dataset (PhysioNet 2019 .tar.gz/.psv folder,
    MIMIC-III demo folder, MIMIC-II numerics .csv) as validated, coded records on the
    vitals, labs, context and crrt topics."""
    from services.recording import is_recording
    from services.replay.source import TOPICS_BY_KIND, UnknownSourceError, open_source

    if is_recording(source):
        for name in ("start", "patients"):
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
                raise click.UsageError(
                    f"--{name} applies to datasets; a recording keeps its own times"
                    " (use --shift-to-now to move them to now)"
                )
        _replay_recording(
            source,
            speed=speed,
            only=frozenset(only) if only else None,
            dry_run=dry_run,
            progress=progress,
            shift_to_now=shift_to_now,
            keep_received_at=keep_received_at,
            window=reorder_window,
        )
        return
    for flag, given in (("--shift-to-now", shift_to_now), ("--keep-received-at", keep_received_at)):
        if given:
            raise click.UsageError(f"{flag} applies to recordings; for datasets use --start now")
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


class _Bar:
    """click's progress bar over the recording's record count, showing event time reached."""

    def __init__(self, total: int) -> None:
        self._reached = ""
        self._bar: ProgressBar[None] = click.progressbar(
            length=max(total, 1),
            label="replaying",
            file=sys.stderr,
            show_pos=True,
            show_eta=True,
            item_show_func=lambda _item: self._reached,
        )
        self._bar.__enter__()
        self._sent = 0

    def update(self, records: int, reached: datetime) -> None:
        self._reached = reached.isoformat(timespec="seconds")
        self._bar.update(records - self._sent, None)
        self._sent = records

    def close(self) -> None:
        self._bar.__exit__(None, None, None)


def _replay_recording(
    path: Path,
    *,
    speed: float | None,
    only: frozenset[str] | None,
    dry_run: bool,
    progress: bool | None,
    shift_to_now: bool,
    keep_received_at: bool,
    window: int,
) -> None:
    import base64
    import json

    from kafka.errors import KafkaError

    from services.kafka_io import TopicLayoutError, check_topics
    from services.recording import Recording, RecordingError, replay_order, scan

    try:
        recording = Recording(path)
    except RecordingError as exc:
        raise click.ClickException(str(exc)) from exc
    with recording:
        header = recording.header
        try:
            if dry_run:
                out = click.get_text_stream("stdout")
                for r in replay_order(recording, window):
                    if only is not None and (r.key or b"").decode(errors="replace") not in only:
                        continue
                    line = {"topic": r.topic, "partition": r.partition, "offset": r.offset}
                    line["key"] = None if r.key is None else r.key.decode(errors="replace")
                    try:
                        line["value"] = json.loads(r.value) if r.value is not None else None
                    except ValueError:
                        line["value_b64"] = base64.b64encode(r.value or b"").decode()
                    out.write(json.dumps(line, separators=(",", ":")) + "\n")
                _report_cut_short(recording)
                return
            settings = load_settings()
            try:
                check_topics(settings.bootstrap_servers, settings.topics, header.topics)
            except (TopicLayoutError, KafkaError, KeyError) as exc:
                raise click.ClickException(f"cannot replay: {exc}") from exc
            show = sys.stderr.isatty() if progress is None else progress
            total = scan(path)[0] if show else 0
            click.echo(
                f"replaying recording {path.name} ({', '.join(header.topics)} from "
                f"{header.source_prefix or '(no prefix)'}*, recorded from "
                f"{header.started_at.isoformat(timespec='seconds')}"
                f"{f', {total} records' if show else ''}) at "
                f"{'max' if speed is None else f'{speed:g}x'} speed into "
                f"{settings.topics.prefix}*" + (", shifted to now" if shift_to_now else ""),
                err=True,
            )
            stats = _send_recording(
                recording,
                settings,
                speed,
                only,
                shift_to_now,
                keep_received_at,
                window,
                show,
                total,
            )
        except RecordingError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(
            f"{'interrupted: ' if stats.interrupted else ''}published {stats.summary()}", err=True
        )
        _report_cut_short(recording)
    if stats.failures:
        sys.exit(1)
    if stats.interrupted:
        sys.exit(130)


def _send_recording(
    recording: Recording,
    settings: Settings,
    speed: float | None,
    only: frozenset[str] | None,
    shift_to_now: bool,
    keep_received_at: bool,
    window: int,
    show: bool,
    total: int,
) -> RecordingReplayStats:
    from services.kafka_io import reliable_producer
    from services.replay.recorded import ReplayError, publish_recording

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    producer = reliable_producer(settings.bootstrap_servers, client_id="vigil-replay")
    bar = _Bar(total) if show else None
    try:
        return publish_recording(
            recording,
            producer,
            settings.topics,
            speed=speed,
            shift_to_now=shift_to_now,
            keep_received_at=keep_received_at,
            only=only,
            window=window,
            stop=stop,
            progress=bar,
            partitions_for=lambda topic: len(producer.partitions_for(topic) or ()),
        )
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if bar is not None:
            bar.close()
        producer.close()


def _report_cut_short(recording: Recording) -> None:
    if recording.cut_short is not None:
        click.echo(
            f"warning: {recording.path} was cut short ({recording.cut_short}): the recorder"
            " did not stop cleanly; every complete record before that was replayed",
            err=True,
        )


if __name__ == "__main__":
    replay()
