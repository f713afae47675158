"""``vigil hl7|nirs|crrt|context listen`` and ``... import``: the ingestion shells."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from schemas.deadletter import DeadLetter
from services.cli_common import load_settings
from services.cli_hl7 import hl7_group, split_messages
from services.config import Settings
from services.ingest import InputRefusedError, Outbound
from services.ingest.codecs import HL7_TOPICS, LINE_TOPICS, Hl7Codec, LineCodec
from services.ingest.gateway import KafkaGateway, StorageUnavailableError
from services.ingest.hl7 import parse_hl7
from services.ingest.lines import LineKind, parse_file
from services.ingest.mllp import MllpError
from services.ingest.runner import ListenerSpec, ProducerFailedError, serve_listeners
from services.ingest.server import Codec
from services.kafka_io import TopicLayoutError, check_topics


def _serve(settings: Settings, *specs: ListenerSpec) -> None:
    def ready(adapter: str, host: str, port: int) -> None:
        click.echo(f"{adapter} listening on {host}:{port}")
        sys.stdout.flush()

    try:
        asyncio.run(serve_listeners(settings, specs, on_ready=ready))
    except (TopicLayoutError, ProducerFailedError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        ports = ", ".join(str(spec.port) for spec in specs)
        raise click.ClickException(f"cannot listen on port(s) {ports}: {exc}") from exc


_PORT = click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="TCP port (0: any free port)"
)


@hl7_group.command("listen")
@_PORT
def hl7_listen(port: int | None) -> None:
    """Accept HL7 v2 over MLLP (IHE PCD-01, lab ORU, ADT); ACK only what Kafka saved."""
    settings = load_settings()
    codec: Codec = Hl7Codec(site_tz=settings.site_tz)
    _serve(settings, ListenerSpec(codec, settings.hl7_port if port is None else port, HL7_TOPICS))


@click.command("listen")
@click.option("--hl7-port", type=click.IntRange(0, 65535), default=None)
@click.option("--nirs-port", type=click.IntRange(0, 65535), default=None)
@click.option("--crrt-port", type=click.IntRange(0, 65535), default=None)
@click.option("--context-port", type=click.IntRange(0, 65535), default=None)
def listen_all(
    hl7_port: int | None, nirs_port: int | None, crrt_port: int | None, context_port: int | None
) -> None:
    """Every listener in one process: HL7/MLLP, NIRS, CRRT and context lines.

    Ports default to VIGIL_HL7_PORT, VIGIL_NIRS_PORT, VIGIL_CRRT_PORT, VIGIL_CONTEXT_PORT.
    """
    settings = load_settings()
    zone = settings.site_tz

    def chosen(option: int | None, default: int) -> int:
        return default if option is None else option

    _serve(
        settings,
        ListenerSpec(Hl7Codec(site_tz=zone), chosen(hl7_port, settings.hl7_port), HL7_TOPICS),
        ListenerSpec(
            LineCodec("nirs", site_tz=zone), chosen(nirs_port, settings.nirs_port), ("nirs",)
        ),
        ListenerSpec(
            LineCodec("crrt", site_tz=zone), chosen(crrt_port, settings.crrt_port), ("crrt",)
        ),
        ListenerSpec(
            LineCodec("context", site_tz=zone),
            chosen(context_port, settings.context_port),
            ("context",),
        ),
    )


@dataclass
class ImportSummary:
    records: int = 0
    refused: int = 0


async def _import(
    settings: Settings,
    adapter: str,
    topics: tuple[str, ...],
    items: list[tuple[str, list[Outbound] | InputRefusedError, bytes]],
) -> ImportSummary:
    """Publish accepted items in order and dead-letter refused ones; all acknowledged."""
    await asyncio.to_thread(
        check_topics, settings.bootstrap_servers, settings.topics, [*topics, "deadletter"]
    )
    gateway = KafkaGateway(
        settings.bootstrap_servers,
        settings.topics,
        client_id=f"vigil-import-{adapter}",
        publish_timeout_s=settings.ingest_publish_timeout_s,
    )
    summary = ImportSummary()
    received_at = datetime.now(UTC)
    await gateway.start()
    try:
        batch: list[Outbound] = []
        for where, result, original in items:
            if isinstance(result, InputRefusedError):
                click.echo(f"{where}: refused ({result.reason}): {result}", err=True)
                letter = DeadLetter.of(
                    original,
                    source=adapter,
                    reason=result.reason,
                    detail=f"{where}: {result}",
                    received_at=received_at,
                )
                await gateway.dead_letter(letter)
                summary.refused += 1
                continue
            batch.extend(result)
            if len(batch) >= 500:
                await gateway.publish(batch)
                summary.records += len(batch)
                batch = []
        await gateway.publish(batch)
        summary.records += len(batch)
    finally:
        await gateway.stop()
    return summary


def _run_import(
    settings: Settings,
    adapter: str,
    topics: tuple[str, ...],
    items: list[tuple[str, list[Outbound] | InputRefusedError, bytes]],
) -> None:
    try:
        summary = asyncio.run(_import(settings, adapter, topics, items))
    except TopicLayoutError as exc:
        raise click.ClickException(str(exc)) from exc
    except StorageUnavailableError as exc:
        raise click.ClickException(f"{exc}; import again (records already saved repeat)") from exc
    click.echo(
        f"published {summary.records} records; refused {summary.refused} "
        f"(kept on the dead-letter topic)"
    )
    if summary.refused:
        raise SystemExit(1)


@hl7_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def hl7_import(file: Path) -> None:
    """Publish the HL7 messages of FILE (as `hl7 parse` reads them); refused ones dead-lettered."""
    settings = load_settings()
    received_at = datetime.now(UTC)
    items: list[tuple[str, list[Outbound] | InputRefusedError, bytes]] = []
    for index, message in enumerate(split_messages(file.read_bytes()), start=1):
        where = f"message {index}"
        if isinstance(message, MllpError):
            error = InputRefusedError("mllp_framing_error", message.message)
            items.append((where, error, message.preview))
            continue
        try:
            parsed = parse_hl7(message, received_at=received_at, site_tz=settings.site_tz)
            items.append((where, list(parsed.records), message))
        except InputRefusedError as exc:
            items.append((where, exc, message))
    _run_import(settings, "hl7", HL7_TOPICS, items)


def _line_group(kind: LineKind, title: str) -> click.Group:
    group = click.Group(kind, help=f"{title} line protocol (docs/protocols.md).")

    @group.command("listen")
    @_PORT
    def listen(port: int | None) -> None:
        """Accept lines over TCP; reply OK only once Kafka saved the record."""
        settings = load_settings()
        default_port = {
            "nirs": settings.nirs_port,
            "crrt": settings.crrt_port,
            "context": settings.context_port,
        }[kind]
        codec: Codec = LineCodec(kind, site_tz=settings.site_tz)
        chosen = default_port if port is None else port
        _serve(settings, ListenerSpec(codec, chosen, LINE_TOPICS[kind]))

    @group.command("import")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    def import_(file: Path) -> None:
        """Publish every record line of FILE; refused lines go to the dead-letter topic."""
        settings = load_settings()
        items: list[tuple[str, list[Outbound] | InputRefusedError, bytes]] = []
        results = parse_file(
            kind, file.read_bytes(), received_at=datetime.now(UTC), site_tz=settings.site_tz
        )
        for line_no, result, original in results:
            where = f"{file.name}:{line_no}"
            outcome = result if isinstance(result, InputRefusedError) else [result.outbound]
            items.append((where, outcome, original))
        _run_import(settings, kind, LINE_TOPICS[kind], items)

    return group


nirs_group = _line_group("nirs", "NIRS cerebral oximetry (rSO2)")
crrt_group = _line_group("crrt", "CRRT machine status")
context_group = _line_group("context", "Patient context (JSON lines)")
