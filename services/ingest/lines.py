"""Line protocols (NIRS, CRRT, context JSON lines): the pure cores the TCP and file shells use.

One record per line; each line is accepted as a :class:`LineRecord` or refused with an
:class:`InputRefusedError`; :func:`reply_line` is the per-line ``OK``/``ERR`` reply.
The protocols are described for senders in docs/protocols.md.

>>> from datetime import UTC, datetime
>>> data = b"# ward 1\\n\\nNIRS v=1 patient=P1 device=D1 time=@1795334400000 left=61\\nNIRS x\\n"
>>> [(n, type(r).__name__) for n, r, _ in parse_file(
...     "nirs", data, received_at=datetime(2026, 11, 22, 8, tzinfo=UTC))]
[(3, 'LineRecord'), (4, 'LineRefusedError')]
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Final, Literal

from services.ingest import InputRefusedError
from services.ingest.context_lines import parse_context_line
from services.ingest.crrt import parse_crrt_line
from services.ingest.linefmt import (
    MAX_LINE_BYTES,
    LineRecord,
    LineRefusedError,
    is_skippable,
    reply_line,
)
from services.ingest.nirs import parse_nirs_line

__all__ = [
    "MAX_LINE_BYTES",
    "PARSERS",
    "LineKind",
    "LineRecord",
    "LineRefusedError",
    "is_skippable",
    "parse_context_line",
    "parse_crrt_line",
    "parse_file",
    "parse_nirs_line",
    "reply_line",
]

LineKind = Literal["nirs", "crrt", "context"]

LineParser = Callable[..., LineRecord]

PARSERS: Final[dict[str, LineParser]] = {
    "nirs": parse_nirs_line,
    "crrt": parse_crrt_line,
    "context": parse_context_line,
}
"""Protocol name -> line parser (all share one signature)."""


def parse_file(
    kind: LineKind, data: bytes, *, received_at: datetime, site_tz: tzinfo | None = None
) -> list[tuple[int, LineRecord | InputRefusedError, bytes]]:
    """Every record line of a file: (1-based line number, result, the line without LF/CRLF).

    Blank lines and lines starting with ``#`` are skipped (they keep their numbers);
    a UTF-8 byte order mark at the start is ignored.
    """
    parse = PARSERS[kind]
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    results: list[tuple[int, LineRecord | InputRefusedError, bytes]] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final LF ends the last line, it does not start one
    for number, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if is_skippable(line):
            continue
        result: LineRecord | InputRefusedError
        try:
            result = parse(line, received_at=received_at, site_tz=site_tz)
        except InputRefusedError as exc:
            result = exc
        results.append((number, result, line))
    return results
