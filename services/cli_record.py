"""``vigil record``: capture topics into a compressed recording file (see services.recording).

Records until Ctrl-C / SIGTERM, ``--duration`` seconds, or ``--until-idle`` seconds without
a new record. Reads every partition itself (no consumer group, nothing committed).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import click

from schemas.topics import TopicRegistry
from services.cli_common import load_settings
from services.recording import (
    RAW_TOPICS,
    RecordedRecord,
    RecordingHeader,
    RecordingStats,
    RecordingWriter,
    event_time_of,
)


class RecordError(RuntimeError):
    """The recording cannot start (topic missing, file exists...)."""


def parse_topics(text: str, registry: TopicRegistry) -> tuple[str, ...]:
    """Comma-separated base names (``raw`` = the raw input topics, ``all`` = every topic).

    >>> parse_topics("vitals, labs", TopicRegistry())
    ('vitals', 'labs')
    >>> parse_topics("raw", TopicRegistry())
    ('vitals', 'nirs', 'crrt', 'labs', 'context')
    """
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part == "raw":
            names.extend(RAW_TOPICS)
        elif part == "all":
            names.extend(spec.base_name for spec in registry)
        else:
            if part.startswith(registry.prefix) and registry.prefix:
                part = part[len(registry.prefix) :]
            registry.spec(part)  # KeyError names the known topics
            names.append(part)
    if not names:
        raise ValueError("no topics given")
    return tuple(dict.fromkeys(names))


def record_topics(
    bootstrap_servers: str,
    registry: TopicRegistry,
    topics: tuple[str, ...],
    out: Path,
    *,
    from_beginning: bool = False,
    duration_s: float | None = None,
    until_idle_s: float | None = None,
    stop: threading.Event | None = None,
    progress: TextIO | None = None,
    on_ready: Callable[[], None] | None = None,
) -> RecordingStats:
    """Record ``topics`` (base names) into ``out`` until stopped; returns what was written."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        client_id="vigil-record",
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    try:
        partitions: dict[str, int] = {}
        for base in topics:
            found = consumer.partitions_for_topic(registry.name(base))
            if not found:
                raise RecordError(f"topic {registry.name(base)} does not exist")
            partitions[base] = len(found)
        assigned = [
            TopicPartition(registry.name(base), p)
            for base in topics
            for p in range(partitions[base])
        ]
        consumer.assign(assigned)
        if from_beginning:
            consumer.seek_to_beginning(*assigned)
        else:
            consumer.seek_to_end(*assigned)
        for tp in assigned:
            consumer.position(tp)  # resolve now: records sent after this line are recorded
        base_of = {registry.name(base): base for base in topics}
        header = RecordingHeader(
            topics=topics,
            partitions=partitions,
            source_prefix=registry.prefix,
            started_at=datetime.now(UTC),
            from_beginning=from_beginning,
        )
        writer = RecordingWriter(out, header)
        if on_ready is not None:
            on_ready()
        started = last_record = time.monotonic()
        last_report = 0.0
        stopped_by = "end"
        try:
            while True:
                now = time.monotonic()
                if stop is not None and stop.is_set():
                    stopped_by = "signal"
                    break
                if duration_s is not None and now - started >= duration_s:
                    stopped_by = "duration"
                    break
                if until_idle_s is not None and now - last_record >= until_idle_s:
                    stopped_by = "idle"
                    break
                batches = consumer.poll(timeout_ms=200)
                for tp, batch in batches.items():
                    base = base_of[tp.topic]
                    for rec in batch:
                        writer.write(
                            RecordedRecord(
                                topic=base,
                                partition=rec.partition,
                                offset=rec.offset,
                                key=rec.key,
                                value=rec.value,
                                timestamp_ms=rec.timestamp,
                                timestamp_type=rec.timestamp_type,
                                event_time_us=event_time_of(base, rec.value),
                                headers=tuple((k, bytes(v)) for k, v in rec.headers or ()),
                            )
                        )
                    last_record = time.monotonic()
                if progress is not None and now - last_report >= 0.5:
                    last_report = now
                    progress.write(
                        f"\r{writer.stats.records} records, "
                        f"{writer.stats.records / max(now - started, 1e-9):.0f}/s"
                    )
                    progress.flush()
        except KeyboardInterrupt:
            stopped_by = "interrupt"
        finally:
            stats = writer.close(stopped_by)
            stats.wall_seconds = time.monotonic() - started
        if progress is not None:
            progress.write("\n")
        return stats
    finally:
        consumer.close()


@click.command("record")
@click.option(
    "--topics",
    default="raw",
    show_default=True,
    help="Comma-separated base topic names; 'raw' = vitals,nirs,crrt,labs,context; 'all'",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Recording file to write (gzip-compressed JSON lines, e.g. run.vrec.gz)",
)
@click.option("--from-beginning", is_flag=True, help="Start at the topics' oldest records")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after S seconds")  # fmt: skip
@click.option(
    "--until-idle",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after S seconds without a new record",
)
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress line on stderr (default: when stderr is a terminal)",
)
def record(
    topics: str,
    out: Path,
    from_beginning: bool,
    duration: float | None,
    until_idle: float | None,
    force: bool,
    progress: bool | None,
) -> None:
    """Record topics (keys, values, headers, broker and event timestamps) into OUT until
    Ctrl-C, --duration or --until-idle. Topic names are stored without VIGIL_TOPIC_PREFIX,
    so `vigil replay OUT` can play the recording into another deployment."""
    from kafka.errors import KafkaError

    settings = load_settings()
    try:
        names = parse_topics(topics, settings.topics)
    except (KeyError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--topics") from exc
    if out.exists() and not force:
        raise click.ClickException(f"{out} exists (use --force to overwrite)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    show = sys.stderr.isatty() if progress is None else progress

    def ready() -> None:
        until = [
            *([f"{duration:g} s"] if duration else []),
            *([f"{until_idle:g} s idle"] if until_idle else []),
            "Ctrl-C",
        ]
        click.echo(
            f"recording {', '.join(settings.topics.name(n) for n in names)} "
            f"{'from the beginning' if from_beginning else 'from now'} into {out} "
            f"(until {' or '.join(until)})",
            err=True,
        )

    try:
        stats = record_topics(
            settings.bootstrap_servers,
            settings.topics,
            names,
            out,
            from_beginning=from_beginning,
            duration_s=duration,
            until_idle_s=until_idle,
            stop=stop,
            progress=sys.stderr if show else None,
            on_ready=ready,
        )
    except (RecordError, KafkaError, OSError) as exc:
        raise click.ClickException(f"cannot record: {exc}") from exc
    wall = stats.wall_seconds
    per_topic = ", ".join(f"{t}={n}" for t, n in sorted(stats.per_topic.items())) or "none"
    click.echo(
        f"recorded {stats.records} records ({per_topic}) in {wall:.1f} s"
        f" ({stats.records / wall if wall > 0 else 0:.0f} records/s), {stats.span()};"
        f" {stats.without_event_time} without an event time; stopped by {stats.stopped_by};"
        f" {out.stat().st_size / 1e6:.2f} MB",
        err=True,
    )


if __name__ == "__main__":
    record()
