"""``vigil hl7``: HL7 v2 tools (``parse`` here; the MLLP listener registers beside it)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, tzinfo
from typing import BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from services.cli_common import load_settings
from services.ingest import InputRefusedError
from services.ingest.hl7 import parse_hl7
from services.ingest.mllp import MllpDecoder, MllpError

_LINE = re.compile(rb"\r\n|\r|\n")
_BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")


def split_messages(data: bytes) -> list[bytes | MllpError]:
    """The messages in a file: MLLP frames, or text where each MSH line starts a message.

    Blank lines end a message; batch envelope segments (FHS/BHS/BTS/FTS) are skipped.
    An :class:`MllpError` in the result is a framing error standing in for a message
    (its ``preview`` holds the bytes concerned).

    >>> split_messages(b"MSH|1\\nPID|1\\n\\nMSH|2\\rPID|2\\rMSH|3")
    [b'MSH|1\\rPID|1', b'MSH|2\\rPID|2', b'MSH|3']
    """
    data = data.removeprefix(b"\xef\xbb\xbf")
    if b"\x0b" in data:
        decoder = MllpDecoder(max_frame_bytes=len(data) + 1)
        events = decoder.feed(data) + decoder.close()
        return [e if isinstance(e, MllpError) else e.payload for e in events]
    messages: list[bytes | MllpError] = []
    current: list[bytes] = []
    for line in _LINE.split(data):
        stripped = line.strip()
        if stripped.startswith(_BATCH_SEGMENTS):
            continue
        if not stripped or stripped.startswith(b"MSH"):
            if current:
                messages.append(b"\r".join(current))
            current = [stripped] if stripped else []
        else:
            current.append(line)
    if current:
        messages.append(b"\r".join(current))
    return messages


def _zone(name: str | None) -> tzinfo:
    if name is None:
        configured = getattr(load_settings(), "site_timezone", None)
        name = str(configured) if configured else "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise click.BadParameter(f"unknown time zone {name!r}", param_hint="--site-tz") from exc


@click.group("hl7")
def hl7_group() -> None:
    """HL7 v2 messages: IHE PCD-01 ORU^R01 observations, lab ORU, ADT A01/A02/A03."""


@hl7_group.command("parse")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--site-tz",
    default=None,
    metavar="ZONE",
    help="IANA zone for times without a UTC offset when MSH-7 has none (default: UTC).",
)
def parse_command(file: BinaryIO, site_tz: str | None) -> None:
    """Parse FILE ('-' for stdin) and print one JSON line per record.

    FILE holds one or several messages: MLLP-framed, separated by blank lines, or
    consecutive (each MSH segment starts a message). Warnings go to stderr. Exits 1
    when a message is refused, after printing everything that parsed.
    """
    zone = _zone(site_tz)
    messages = split_messages(file.read())
    if not messages:
        raise click.ClickException("no HL7 message found")
    failures = 0
    received_at = datetime.now(UTC)
    for index, item in enumerate(messages, start=1):
        if isinstance(item, MllpError):
            failures += 1
            click.echo(f"message {index}: refused (mllp_framing): {item.message}", err=True)
            continue
        try:
            parsed = parse_hl7(item, received_at=received_at, site_tz=zone)
        except InputRefusedError as exc:
            failures += 1
            click.echo(f"message {index}: refused ({exc.reason}): {exc}", err=True)
            continue
        for warning in parsed.warnings:
            click.echo(f"message {index} ({parsed.control_id}): warning: {warning}", err=True)
        for record in parsed.records:
            line = {
                "topic": record.topic,
                "key": record.key,
                "payload": record.payload.model_dump(mode="json"),
            }
            click.echo(json.dumps(line, ensure_ascii=False))
    if failures:
        click.echo(f"{failures} of {len(messages)} messages refused", err=True)
        raise SystemExit(1)
