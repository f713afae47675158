"""Shared pieces of Vigil's line protocols: framing, tokens, timestamps, numbers, replies.

A record is one UTF-8 line of at most :data:`MAX_LINE_BYTES` bytes (terminator
excluded), ended by LF or CRLF. The key=value protocols (NIRS, CRRT) read
``TYPE key=value key="value with spaces" ...``; the context protocol is one JSON
object per line. Every refusal is an :class:`InputRefusedError` (a
:class:`LineRefusedError` carrying the sender's ``id=`` once it is known), and
:func:`reply_line` turns a result into the one-line ``OK``/``ERR`` reply.
docs/protocols.md is the sender-facing description.

>>> tokenize(b'NIRS v=1 patient=MRN1 bed="ICU 1/07"\\r\\n', "NIRS")
{'v': '1', 'patient': 'MRN1', 'bed': 'ICU 1/07'}
>>> parse_time("2026-11-22T08:00:01.250+01:00", site_tz=None).isoformat()
'2026-11-22T07:00:01.250000+00:00'
>>> reply_line(17, "123", None)
b'OK 17 id=123\\n'
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Final

from pydantic import BaseModel, ValidationError

from schemas.codes import QUANTITIES, Quantity
from schemas.common import SourceInfo
from schemas.observations import Measurement, ObservationMessage
from schemas.units import canonical_unit_spelling, normalise
from services.ingest import InputRefusedError, Outbound

MAX_LINE_BYTES: Final = 4096
"""Longest accepted line in bytes, LF/CRLF terminator excluded."""

MAX_FUTURE: Final = timedelta(minutes=10)
"""An observation time further than this after ``received_at`` is refused (clock or zone)."""

EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""Observation times before this are refused (device clock not set)."""

REASONS: Final = frozenset(
    {"line_parse_error", "invalid_message", "unknown_field", "bad_timestamp", "no_patient_identity"}
)
"""Every reason a line parser can refuse with."""

SENDER_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
"""Allowed sender ids (``id=``): the de-duplication key, echoed in replies."""

PATIENT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
"""Same rule as :data:`schemas.common.PatientId`."""

NO_VALUE: Final = "-"
"""Value meaning "not measured / sensor off": the field produces no measurement."""

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_BARE = re.compile(r'[^\s"]+')
_QUOTED = re.compile(r'"((?:[^"\\]|\\["\\])*)"')
_ESCAPE = re.compile(r'\\(["\\])')
_BLANK = " \t"
_NUMBER = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(.*)", re.DOTALL)
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)
_EPOCH_MS = re.compile(r"@(\d{1,15})")
_MAX_OFFSET = timedelta(hours=14)
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_REPLY_MESSAGE_CHARS = 300


class LineRefusedError(InputRefusedError):
    """A refused line whose sender id (``id=``) was read before the refusal."""

    def __init__(self, reason: str, message: str, sender_id: str | None = None) -> None:
        super().__init__(reason, message)
        self.sender_id = sender_id


@dataclass(frozen=True)
class LineRecord:
    """One accepted line: the record to publish, the sender's id and the patient."""

    outbound: Outbound
    sender_id: str | None  # ``id=`` token (NIRS, CRRT) or JSON "id" (context)
    patient_id: str

    @property
    def dedup_key(self) -> tuple[str, str | None, str] | None:
        """(patient, device, sender id): records with equal keys are published once."""
        if self.sender_id is None:
            return None
        source = getattr(self.outbound.payload, "source", None)
        if source is None:  # ContextEvent: the event sits under .root
            source = getattr(getattr(self.outbound.payload, "root", None), "source", None)
        device = getattr(source, "device_id", None)
        return (self.patient_id, device, self.sender_id)


def refuse(reason: str, message: str) -> InputRefusedError:
    """An :class:`InputRefusedError` (to ``raise``), reason checked against :data:`REASONS`."""
    assert reason in REASONS, reason
    return InputRefusedError(reason, message)


@contextmanager
def carrying_sender_id(sender_id: str | None) -> Iterator[None]:
    """Re-raise any refusal inside the block as a :class:`LineRefusedError` with the id."""
    try:
        yield
    except LineRefusedError:
        raise
    except InputRefusedError as exc:
        raise LineRefusedError(exc.reason, str(exc), sender_id) from None


def _bad_char(text: str) -> int | None:
    """Index of the first control character (tab allowed) or line separator, if any."""
    for i, ch in enumerate(text):
        if ch != "\t" and (unicodedata.category(ch) in ("Cc", "Zl", "Zp")):
            return i
    return None


def decode_line(line: bytes) -> str:
    """The line as text: terminator stripped, length, UTF-8 and control characters checked.

    >>> decode_line(b"NIRS v=1\\r\\n")
    'NIRS v=1'
    >>> decode_line(b"\\xff")
    Traceback (most recent call last):
    ...
    services.ingest.InputRefusedError: not UTF-8 (byte 1)
    """
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    if len(line) > MAX_LINE_BYTES:
        raise refuse("line_parse_error", f"line is {len(line)} bytes, limit {MAX_LINE_BYTES}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse("line_parse_error", f"not UTF-8 (byte {exc.start + 1})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    bad = _bad_char(text)
    if bad is not None:
        raise refuse(
            "line_parse_error",
            f"control character U+{ord(text[bad]):04X} at column {bad + 1}",
        )
    return text


def is_skippable(line: bytes) -> bool:
    """Blank lines and ``#`` comments carry no record and get no reply.

    >>> is_skippable(b"  \\r\\n"), is_skippable(b"# note"), is_skippable(b"NIRS v=1")
    (True, True, False)
    """
    stripped = line.strip(b" \t\r\n")
    return not stripped or stripped.startswith(b"#") or stripped == b"\xef\xbb\xbf"


def tokenize(line: bytes, record_type: str) -> dict[str, str]:
    """The key=value tokens of a ``record_type`` line (keys lower-cased), in order.

    Values are bare (no spaces or ``"``) or double-quoted with ``\\"`` and ``\\\\`` escapes.
    """
    text = decode_line(line)
    pos, end = 0, len(text)
    while pos < end and text[pos] in _BLANK:
        pos += 1
    start = pos
    while pos < end and text[pos] not in _BLANK:
        pos += 1
    word = text[start:pos]
    if not word:
        raise refuse("line_parse_error", f"empty line: expected a {record_type} record")
    if word.upper() != record_type:
        shown = word if len(word) <= 20 else word[:20] + "..."
        raise refuse("line_parse_error", f"expected a {record_type} record, got {shown!r}")
    tokens: dict[str, str] = {}
    while True:
        while pos < end and text[pos] in _BLANK:
            pos += 1
        if pos >= end:
            return tokens
        column = pos + 1
        key_match = _KEY.match(text, pos)
        if key_match is None:
            raise refuse("line_parse_error", f"expected key=value at column {column}")
        key = key_match.group().lower()
        pos = key_match.end()
        if pos >= end or text[pos] != "=":
            raise refuse("line_parse_error", f"expected '=' after {key!r} at column {pos + 1}")
        pos += 1
        if pos < end and text[pos] == '"':
            quoted = _QUOTED.match(text, pos)
            if quoted is None:
                raise refuse(
                    "line_parse_error",
                    f"unterminated quote or bad escape in {key!r} at column {pos + 1}",
                )
            value = _ESCAPE.sub(r"\1", quoted.group(1))
            pos = quoted.end()
        else:
            bare = _BARE.match(text, pos)
            if bare is None:
                raise refuse(
                    "line_parse_error",
                    f"empty value for {key!r} at column {pos + 1} (use - for no value)",
                )
            value = bare.group()
            pos = bare.end()
        if pos < end and text[pos] not in _BLANK:
            raise refuse("line_parse_error", f"unexpected {text[pos]!r} at column {pos + 1}")
        if key in tokens:
            raise refuse("line_parse_error", f"key {key!r} given twice")
        tokens[key] = value


def parse_sender_id(value: object) -> str:
    """A sender id (``id=``), checked against :data:`SENDER_ID_PATTERN`."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not SENDER_ID_PATTERN.fullmatch(value):
        raise refuse(
            "invalid_message", "id must be 1-64 characters of A-Z a-z 0-9 . _ : @ - (or an int)"
        )
    return value


def parse_patient_id(value: object) -> str:
    """The patient id; absent, ``-`` or empty is :data:`no_patient_identity`."""
    if value is None or value in ("", NO_VALUE):
        raise refuse("no_patient_identity", "no patient id: a record needs its patient")
    if not isinstance(value, str) or not PATIENT_ID_PATTERN.fullmatch(value):
        raise refuse(
            "invalid_message", "patient id must be 1-64 characters of A-Z a-z 0-9 . _ : @ -"
        )
    return value


def parse_text(key: str, value: object, max_chars: int) -> str:
    """A non-empty free-text value (device, bed, alarm text) of at most ``max_chars``."""
    if not isinstance(value, str) or not value.strip():
        raise refuse("invalid_message", f"{key} must be a non-empty string")
    if len(value) > max_chars:
        raise refuse("invalid_message", f"{key} is longer than {max_chars} characters")
    if _bad_char(value) is not None:
        raise refuse("invalid_message", f"{key} contains a control character")
    return value.strip()


def _in_site_zone(naive: datetime, site_tz: tzinfo) -> datetime:
    early = naive.replace(tzinfo=site_tz, fold=0)
    late = naive.replace(tzinfo=site_tz, fold=1)
    if early.utcoffset() != late.utcoffset():
        raise refuse(
            "bad_timestamp",
            f"local time {naive.isoformat()} is ambiguous or skipped at a DST change: send "
            "an offset",
        )
    return early


def parse_time(value: str, *, site_tz: tzinfo | None) -> datetime:
    """An ISO 8601 time with offset (``Z``, ``+01:00``), or ``@`` + epoch milliseconds, in UTC.

    A time without offset is read in ``site_tz`` (refused when None, or when ambiguous).

    >>> parse_time("@1795334401000", site_tz=None).isoformat()
    '2026-11-22T08:00:01+00:00'
    >>> parse_time("2026-11-22T08:00", site_tz=None)
    Traceback (most recent call last):
    ...
    services.ingest.InputRefusedError: time '2026-11-22T08:00' has no UTC offset ...
    """
    epoch = _EPOCH_MS.fullmatch(value)
    if epoch is not None:
        try:
            return _UNIX_EPOCH + timedelta(milliseconds=int(epoch.group(1)))
        except OverflowError:
            raise refuse("bad_timestamp", f"epoch milliseconds {value!r} out of range") from None
    match = _ISO.fullmatch(value)
    if match is None:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise refuse(
            "bad_timestamp",
            f"time {shown!r} is not YYYY-MM-DDThh:mm[:ss[.fff]]+hh:mm, ...Z or @epoch-ms",
        )
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        naive = datetime(  # noqa: DTZ001 - the zone is attached just below
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro
        )
    except ValueError as exc:
        raise refuse("bad_timestamp", f"time {value!r}: {exc}") from None
    if zulu:
        return naive.replace(tzinfo=UTC)
    if sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        if offset > _MAX_OFFSET or int(off_m) >= 60:
            raise refuse("bad_timestamp", f"UTC offset in {value!r} is out of range")
        zone = timezone(-offset if sign == "-" else offset)
        return naive.replace(tzinfo=zone).astimezone(UTC)
    if site_tz is None:
        raise refuse(
            "bad_timestamp",
            f"time {value!r} has no UTC offset (add Z or +hh:mm; no site zone is configured)",
        )
    return _in_site_zone(naive, site_tz).astimezone(UTC)


def check_time_window(observed_at: datetime, received_at: datetime, key: str = "time") -> None:
    """Refuse times before :data:`EARLIEST` or more than :data:`MAX_FUTURE` after receipt."""
    if observed_at < EARLIEST:
        raise refuse("bad_timestamp", f"{key} is before 2000-01-01: device clock not set?")
    if observed_at > received_at + MAX_FUTURE:
        ahead = observed_at - received_at
        raise refuse(
            "bad_timestamp",
            f"{key} is {ahead.total_seconds() / 60:.0f} min after receipt: clock or UTC offset"
            " wrong?",
        )


def require_aware(received_at: datetime) -> datetime:
    """``received_at`` in UTC; a naive one is a programming error (ValueError)."""
    if received_at.tzinfo is None or received_at.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    return received_at.astimezone(UTC)


def parse_number(key: str, value: str) -> tuple[float, str]:
    """A decimal number and the unit written after it (``"180mL/min"`` -> 180.0, "mL/min").

    >>> parse_number("tmp", "8.5 kPa"), parse_number("left", "64")
    ((8.5, 'kPa'), (64.0, ''))
    """
    match = _NUMBER.fullmatch(value.strip())
    if match is None:
        shown = value if len(value) <= 20 else value[:20] + "..."
        raise refuse("invalid_message", f"{key}: {shown!r} is not a number (use - for no value)")
    number = float(match.group(1))
    if not math.isfinite(number):
        raise refuse("invalid_message", f"{key}: number out of range")
    return number, match.group(2).strip()


def describe_validation_error(exc: ValidationError, *, skip_loc: int = 0) -> str:
    """The first errors of a pydantic error as one short line: ``field: message; ...``."""
    parts = []
    for error in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in error["loc"][skip_loc:])
        parts.append(f"{loc}: {error['msg']}" if loc else str(error["msg"]))
    more = len(exc.errors()) - len(parts)
    text = "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
    return text if len(text) <= 240 else text[:237] + "..."


def _one_line(text: str) -> str:
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)
    return " ".join(cleaned.split())


def reply_line(line_no: int, sender_id: str | None, error: InputRefusedError | None) -> bytes:
    """The reply to line ``line_no``: ``OK <n>[ id=<id>]`` or ``ERR <n>[ id=<id>] <reason>: <why>``.

    Always exactly one LF-terminated line. When ``sender_id`` is None the id carried by a
    :class:`LineRefusedError` is used.

    >>> reply_line(3, None, InputRefusedError("invalid_message", "left: 'x'\\nOK 4"))
    b"ERR 3 invalid_message: left: 'x' OK 4\\n"
    """
    if line_no < 1:
        raise ValueError("line numbers start at 1")
    if sender_id is None and isinstance(error, LineRefusedError):
        sender_id = error.sender_id
    head = f"OK {line_no}" if error is None else f"ERR {line_no}"
    if sender_id is not None:
        head += " id=" + re.sub(r"[^A-Za-z0-9._:@-]", "?", sender_id[:64])
    if error is None:
        return (head + "\n").encode()
    reason = error.reason if re.fullmatch(r"[a-z0-9_]{1,40}", error.reason) else "error"
    message = _one_line(str(error)) or "(no detail)"
    if len(message) > _REPLY_MESSAGE_CHARS:
        message = message[: _REPLY_MESSAGE_CHARS - 3] + "..."
    return f"{head} {reason}: {message}\n".encode(errors="replace")


COMMON_KEYS: Final = ("v", "patient", "device", "time", "id", "bed", "care_unit")
"""Keys every key=value record has (``bed`` and ``care_unit`` optional, ``id`` recommended)."""

PROTOCOL_VERSION: Final = "1"


@dataclass(frozen=True)
class Header:
    """The common keys of a key=value line, checked."""

    patient_id: str
    device_id: str
    observed_at: datetime
    bed: str | None
    care_unit: str | None


def did_you_mean(name: str, known: tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else the list of known names.

    >>> did_you_mean("lft", ("left", "right")), did_you_mean("zz", ("left", "right"))
    (" (did you mean 'left'?)", ' (known: left, right)')
    """
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else " (known: " + ", ".join(known) + ")"


def read_sender_id(tokens: dict[str, str]) -> str | None:
    """The ``id=`` token, if any (read first so that later refusals can echo it)."""
    value = tokens.get("id")
    return None if value is None or value == NO_VALUE else parse_sender_id(value)


def read_header(
    tokens: dict[str, str],
    record_type: str,
    field_keys: tuple[str, ...],
    *,
    received_at: datetime,
    site_tz: tzinfo | None,
) -> Header:
    """Version, unknown keys, patient, device, time, bed and unit of a key=value line."""
    version = tokens.get("v")
    if version is None:
        raise refuse("invalid_message", f"v={PROTOCOL_VERSION} (protocol version) is required")
    if version != PROTOCOL_VERSION:
        raise refuse(
            "invalid_message",
            f"{record_type} protocol version {version[:10]!r} is not supported (v=1)",
        )
    for key in tokens:
        if key not in COMMON_KEYS and key not in field_keys and not key.startswith("x_"):
            raise refuse(
                "unknown_field",
                f"unknown key {key!r} for {record_type} v=1"
                + did_you_mean(key, (*COMMON_KEYS, *field_keys)),
            )
    patient_id = parse_patient_id(tokens.get("patient"))
    device = tokens.get("device")
    if device is None or device == NO_VALUE:
        raise refuse("invalid_message", "device= is required (the sending device's id)")
    device_id = parse_text("device", device, 128)
    time = tokens.get("time")
    if time is None or time == NO_VALUE:
        raise refuse("bad_timestamp", "time= is required (ISO 8601 with offset, or @epoch-ms)")
    observed_at = parse_time(time, site_tz=site_tz)
    check_time_window(observed_at, received_at)
    bed, care_unit = tokens.get("bed"), tokens.get("care_unit")
    return Header(
        patient_id=patient_id,
        device_id=device_id,
        observed_at=observed_at,
        bed=None if bed in (None, NO_VALUE) else parse_text("bed", bed, 32),
        care_unit=None if care_unit in (None, NO_VALUE) else parse_text("care_unit", care_unit, 32),
    )


def numeric_measurement(
    key: str, value: str, quantity: Quantity, header: Header, *, artefact: bool = False
) -> Measurement | None:
    """``key=value`` as a measurement of ``quantity`` via :func:`normalise`; None for ``-``.

    A unit written after the number is converted to the canonical unit; a unit that
    cannot be converted is refused. Implausible values are kept with ``artefact=True``.
    """
    if value == NO_VALUE:
        return None
    number, unit = parse_number(key, value)
    if unit and canonical_unit_spelling(unit) is None:
        raise refuse("invalid_message", f"{key}: unknown unit {unit[:20]!r}")
    system, code, _label = QUANTITIES[quantity].primary
    try:
        measurement = normalise(
            system,
            code,
            header.observed_at,
            value=number,
            unit=unit,
            device_id=header.device_id,
            artefact=artefact,
            quantity=quantity,
        )
    except ValidationError as exc:
        raise refuse("invalid_message", f"{key}: {describe_validation_error(exc)}") from None
    if measurement.quantity is None:
        raise refuse(
            "invalid_message",
            f"{key}: unit {unit[:20]!r} cannot be converted to {QUANTITIES[quantity].ucum_unit!r}",
        )
    return measurement


def text_measurement(quantity: Quantity, value: str, header: Header) -> Measurement:
    """A coded text value (CRRT mode, alarm) of ``quantity`` via :func:`normalise`."""
    system, code, _label = QUANTITIES[quantity].primary
    try:
        return normalise(
            system,
            code,
            header.observed_at,
            value_text=value,
            device_id=header.device_id,
            quantity=quantity,
        )
    except ValidationError as exc:
        raise refuse("invalid_message", describe_validation_error(exc)) from None


def build(model: Callable[..., BaseModel], **fields: object) -> BaseModel:
    """``model(**fields)``, a validation error refused as ``invalid_message``."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise refuse("invalid_message", describe_validation_error(exc)) from None


def observation_record(
    model: type[ObservationMessage],
    header: Header,
    sender_id: str | None,
    measurements: list[Measurement],
    *,
    received_at: datetime,
) -> LineRecord:
    """The record of one NIRS or CRRT line: its message on the model's own topic."""
    topic = model.category.value
    payload = build(
        model,
        patient_id=header.patient_id,
        bed=header.bed,
        care_unit=header.care_unit,
        source=SourceInfo(adapter=topic, device_id=header.device_id, message_control_id=sender_id),
        received_at=received_at,
        measurements=tuple(measurements),
    )
    return LineRecord(
        outbound=Outbound(topic=topic, key=header.patient_id, payload=payload),
        sender_id=sender_id,
        patient_id=header.patient_id,
    )
