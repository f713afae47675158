"""Recordings of Kafka topics: a gzip-compressed JSON-lines file, written and read streaming.

Format ``vigil-recording`` version 1 (one JSON object per line, gzip-compressed)::

    {"format": "vigil-recording", "version": 1, "topics": [...], "partitions": {...},
     "source_prefix": "icu.", "started_at": "...", "from_beginning": false}
    {"topic": "vitals", "partition": 0, "offset": 17, "timestamp_ms": 1767254400000,
     "timestamp_type": 0, "event_time_us": 1767254399000000, "key": "p1",
     "value": "{...}", "headers": [["name", "<base64>"]]}
    ...
    {"end": true, "records": 12345, "per_topic": {"vitals": 12000, ...},
     "first_event": "...", "last_event": "...", "ended_at": "...", "stopped_by": "idle"}

- ``topic`` is the *base* name (the deployment's ``VIGIL_TOPIC_PREFIX`` stripped), so a
  recording replays into any prefix.
- ``key`` / ``value`` hold the bytes as text when they are UTF-8 (JSON payloads always
  are), else ``key_b64`` / ``value_b64`` hold them base64-encoded; a null key or value
  (tombstone) is ``null``. Header values are always base64.
- ``timestamp_ms`` / ``timestamp_type`` are the broker's record timestamp (0 = CreateTime,
  1 = LogAppendTime); ``event_time_us`` is the payload's event time (observation time,
  alert trigger time, ...) in microseconds since the epoch, ``null`` when the value is
  not a valid payload of its topic (such records are kept, byte for byte, never dropped).
- The end line is written when the recorder stops cleanly. The recorder flushes the
  compressed stream every second, so a recorder that is killed leaves every record up to
  its last flush readable; the reader then reports the file as cut short.

Pure parts here (format, event times, time shift, replay order, pacing); the Kafka shells
are :func:`record_topics` (below) and :mod:`services.replay.recorded`.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import heapq
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.alerts import AlertAck, AlertEvent
from schemas.annotations import GroundTruth
from schemas.context import ContextEvent
from schemas.deadletter import DeadLetter
from schemas.derived import FeatureSnapshot, RiskScore
from schemas.observations import ObservationMessage
from schemas.topics import TOPICS

FORMAT = "vigil-recording"
VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
RAW_TOPICS = ("vitals", "nirs", "crrt", "labs", "context")
"""The raw input topics: what a recording needs to replay through a worker."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PAYLOADS: dict[str, type[BaseModel]] = {spec.base_name: spec.payload for spec in TOPICS}


class RecordingError(ValueError):
    """A recording file that cannot be read: the message names the file and line."""


# --- records -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRecord:
    """One Kafka record as recorded."""

    topic: str  # base name, no prefix
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    timestamp_type: int = 0
    event_time_us: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def sort_time_us(self) -> int:
        """Event time, or the broker timestamp for a record without one."""
        return self.event_time_us if self.event_time_us is not None else self.timestamp_ms * 1000


def to_us(at: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact, no float rounding).

    >>> to_us(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC))
    1000005
    """
    delta = at - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """The UTC datetime of microseconds since the epoch.

    >>> from_us(1000005).isoformat()
    '1970-01-01T00:00:01.000005+00:00'
    """
    return _EPOCH + timedelta(microseconds=us)


def _text_or_b64(name: str, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {name: None}
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(data).decode("ascii")}


def encode_record(record: RecordedRecord) -> bytes:
    """One record line (with its newline).

    >>> r = RecordedRecord("vitals", 1, 7, b"p1", b'{"a":1}', 1000, event_time_us=999000)
    >>> decode_record(encode_record(r), 2) == r
    True
    """
    line: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "timestamp_type": record.timestamp_type,
        "event_time_us": record.event_time_us,
        **_text_or_b64("key", record.key),
        **_text_or_b64("value", record.value),
        "headers": [[k, base64.b64encode(v).decode("ascii")] for k, v in record.headers],
    }
    return orjson.dumps(line) + b"\n"


def _bytes_field(obj: dict[str, Any], name: str, where: str) -> bytes | None:
    if f"{name}_b64" in obj:
        try:
            return base64.b64decode(obj[f"{name}_b64"], validate=True)
        except (binascii.Error, TypeError) as exc:
            raise RecordingError(f"{where}: {name}_b64 is not base64: {exc}") from exc
    if name not in obj:
        raise RecordingError(f"{where}: no {name!r} field")
    text = obj[name]
    if text is None:
        return None
    if not isinstance(text, str):
        raise RecordingError(f"{where}: {name!r} must be a string or null")
    return text.encode("utf-8")


def _int_field(obj: dict[str, Any], name: str, where: str, *, nullable: bool = False) -> Any:
    value = obj.get(name)
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordingError(f"{where}: {name!r} must be an integer, got {value!r}")
    return value


def decode_record(line: bytes, line_no: int, path: str = "recording") -> RecordedRecord:
    """Parse one record line; RecordingError names ``path`` and ``line_no`` on bad input."""
    where = f"{path}: line {line_no}"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RecordingError(f"{where}: not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise RecordingError(f"{where}: not a JSON object")
    topic = obj.get("topic")
    if not isinstance(topic, str) or not topic:
        raise RecordingError(f"{where}: no topic")
    headers_raw = obj.get("headers", [])
    try:
        headers = tuple((str(k), base64.b64decode(v, validate=True)) for k, v in headers_raw)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise RecordingError(f"{where}: bad headers ({exc})") from exc
    return RecordedRecord(
        topic=topic,
        partition=_int_field(obj, "partition", where),
        offset=_int_field(obj, "offset", where),
        key=_bytes_field(obj, "key", where),
        value=_bytes_field(obj, "value", where),
        timestamp_ms=_int_field(obj, "timestamp_ms", where),
        timestamp_type=_int_field(obj, "timestamp_type", where),
        event_time_us=_int_field(obj, "event_time_us", where, nullable=True),
        headers=headers,
    )


# --- header and end line -------------------------------------------------------------


@dataclass(frozen=True)
class RecordingHeader:
    topics: tuple[str, ...]
    partitions: dict[str, int]
    source_prefix: str
    started_at: datetime
    from_beginning: bool = False
    version: int = VERSION

    def encode(self) -> bytes:
        return (
            orjson.dumps(
                {
                    "format": FORMAT,
                    "version": self.version,
                    "topics": list(self.topics),
                    "partitions": self.partitions,
                    "source_prefix": self.source_prefix,
                    "started_at": self.started_at.isoformat(),
                    "from_beginning": self.from_beginning,
                }
            )
            + b"\n"
        )

    @classmethod
    def decode(cls, line: bytes, path: str) -> RecordingHeader:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise RecordingError(f"{path}: line 1: not a recording header ({exc})") from exc
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise RecordingError(f"{path}: line 1: not a {FORMAT} header")
        if obj.get("version") != VERSION:
            raise RecordingError(
                f"{path}: line 1: format version {obj.get('version')!r}, this Vigil reads {VERSION}"
            )
        try:
            return cls(
                topics=tuple(obj["topics"]),
                partitions={str(k): int(v) for k, v in obj["partitions"].items()},
                source_prefix=str(obj.get("source_prefix", "")),
                started_at=datetime.fromisoformat(obj["started_at"]),
                from_beginning=bool(obj.get("from_beginning", False)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordingError(f"{path}: line 1: bad header field ({exc!r})") from exc


@dataclass
class RecordingStats:
    """Counts kept while recording or reading; written as the end line."""

    per_topic: Counter[str] = field(default_factory=Counter)
    first_event_us: int | None = None
    last_event_us: int | None = None
    without_event_time: int = 0
    ended_at: datetime | None = None
    stopped_by: str | None = None
    wall_seconds: float = 0.0

    @property
    def records(self) -> int:
        return sum(self.per_topic.values())

    def add(self, record: RecordedRecord) -> None:
        self.per_topic[record.topic] += 1
        if record.event_time_us is None:
            self.without_event_time += 1
            return
        t = record.event_time_us
        self.first_event_us = t if self.first_event_us is None else min(self.first_event_us, t)
        self.last_event_us = t if self.last_event_us is None else max(self.last_event_us, t)

    def span(self) -> str:
        if self.first_event_us is None or self.last_event_us is None:
            return "no event times"
        first, last = from_us(self.first_event_us), from_us(self.last_event_us)
        return f"event time {first.isoformat()} .. {last.isoformat()} ({last - first})"

    def encode_end(self) -> bytes:
        return (
            orjson.dumps(
                {
                    "end": True,
                    "records": self.records,
                    "per_topic": dict(sorted(self.per_topic.items())),
                    "first_event": from_us(self.first_event_us).isoformat()
                    if self.first_event_us is not None
                    else None,
                    "last_event": from_us(self.last_event_us).isoformat()
                    if self.last_event_us is not None
                    else None,
                    "without_event_time": self.without_event_time,
                    "ended_at": (self.ended_at or datetime.now(UTC)).isoformat(),
                    "stopped_by": self.stopped_by,
                }
            )
            + b"\n"
        )


# --- writing -------------------------------------------------------------------------


class RecordingWriter:
    """Streams records into a gzip file; flushes the compressed stream every ``flush_s``."""

    def __init__(
        self,
        path: Path,
        header: RecordingHeader,
        *,
        flush_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.stats = RecordingStats()
        self._clock = clock
        self._flush_s = flush_s
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = path.open("wb")
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6)
        self._gz.write(header.encode())
        self._gz.flush(zlib.Z_SYNC_FLUSH)
        self._last_flush = clock()
        self._closed = False

    def write(self, record: RecordedRecord) -> None:
        self._gz.write(encode_record(record))
        self.stats.add(record)
        now = self._clock()
        if now - self._last_flush >= self._flush_s:
            self._gz.flush(zlib.Z_SYNC_FLUSH)
            self._raw.flush()
            self._last_flush = now

    def close(self, stopped_by: str) -> RecordingStats:
        """Write the end line and close the file (idempotent)."""
        if not self._closed:
            self._closed = True
            self.stats.stopped_by = stopped_by
            self.stats.ended_at = datetime.now(UTC)
            try:
                self._gz.write(self.stats.encode_end())
                self._gz.close()
            finally:
                self._raw.close()
        return self.stats

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close("error" if exc[0] is not None else "end")


# --- reading -------------------------------------------------------------------------


def is_recording(path: Path) -> bool:
    """True when ``path`` is a file that starts like a Vigil recording (gzip + header)."""
    if not path.is_file():
        return False
    with path.open("rb") as raw:
        if raw.read(2) != GZIP_MAGIC:
            return False
    try:
        with gzip.open(path, "rb") as handle:
            first = handle.readline(4096)
    except (OSError, EOFError, zlib.error):
        return False
    return f'"format":"{FORMAT}"'.encode() in first


class Recording:
    """A recording opened for reading: header first, then records streamed in file order.

    Iterating yields every record; afterwards :attr:`end` holds the end line (None when the
    file was cut short, e.g. a killed recorder) and :attr:`cut_short` says why.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.end: dict[str, Any] | None = None
        self.cut_short: str | None = None
        self.lines_read = 0
        self._handle = gzip.GzipFile(path, "rb")
        try:
            first = self._readline()
            if not first:
                raise RecordingError(f"{path}: empty file, no recording header")
            self.header = RecordingHeader.decode(first, str(path))
        except BaseException:
            self._handle.close()
            raise

    def _readline(self) -> bytes:
        try:
            line = self._handle.readline()
        except (OSError, zlib.error) as exc:
            raise RecordingError(
                f"{self.path}: line {self.lines_read + 1}: corrupt compressed data ({exc})"
            ) from exc
        except EOFError:
            self.cut_short = f"compressed stream ends after line {self.lines_read}"
            return b""
        if line:
            self.lines_read += 1
        return line

    def __iter__(self) -> Iterator[RecordedRecord]:
        path = str(self.path)
        while True:
            line = self._readline()
            if not line:
                if self.end is None and self.cut_short is None:
                    self.cut_short = f"no end line after line {self.lines_read}"
                return
            if not line.endswith(b"\n"):
                self.cut_short = f"line {self.lines_read} is incomplete"
                return
            if self.end is not None:
                raise RecordingError(f"{path}: line {self.lines_read}: data after the end line")
            if line.startswith(b'{"end":'):
                try:
                    self.end = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise RecordingError(
                        f"{path}: line {self.lines_read}: bad end line ({exc})"
                    ) from exc
                continue
            yield decode_record(line, self.lines_read, path)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scan(path: Path) -> tuple[int, dict[str, Any] | None]:
    """Record count and end line without parsing records (for a progress bar's length)."""
    lines = 0
    last = b""
    try:
        with gzip.open(path, "rb") as handle:
            for line in handle:
                lines += 1
                last = line
    except (EOFError, OSError, zlib.error):
        pass  # the replay itself reports where the file is damaged
    end: dict[str, Any] | None = None
    if last.startswith(b'{"end":'):
        try:
            end = orjson.loads(last)
        except orjson.JSONDecodeError:
            end = None
    return max(0, lines - 1 - (1 if end is not None else 0)), end


# --- payloads: event time, time shift ------------------------------------------------


def payload_model(topic: str) -> type[BaseModel] | None:
    """The pydantic payload class of a base topic name (None for a topic we do not know)."""
    return _PAYLOADS.get(topic)


def payload_event_time(payload: BaseModel) -> datetime | None:
    """The event time a payload describes (observation, trigger, computation, onset...)."""
    if isinstance(payload, ContextEvent):
        return payload.root.observed_at
    if isinstance(payload, ObservationMessage):
        return payload.observed_at
    if isinstance(payload, AlertEvent):
        return payload.triggered_at
    if isinstance(payload, FeatureSnapshot | RiskScore):
        return payload.computed_at
    if isinstance(payload, GroundTruth):
        return payload.onset
    if isinstance(payload, AlertAck):
        return payload.at
    if isinstance(payload, DeadLetter):
        return payload.received_at
    return None


_EVENT_TIME_FIELD = {
    "context": "observed_at",
    "alerts": "triggered_at",
    "features": "computed_at",
    "risk": "computed_at",
    "groundtruth": "onset",
    "alerts.ack": "at",
    "deadletter": "received_at",
}
_OBSERVATION_TOPICS = frozenset({"vitals", "nirs", "crrt", "labs"})


def event_time_of(topic: str, value: bytes | None) -> int | None:
    """Event time (µs) of a record value, None when the value does not carry one.

    The same time as :func:`payload_event_time` of the validated payload (an observation
    message's latest ``observed_at``), read from the JSON without validating it: ~10x
    faster, so the recorder keeps up with the topics.

    >>> event_time_of("vitals", b'{"measurements": [{"observed_at": "2025-01-01T00:00:02Z"},'
    ...     b' {"observed_at": "2025-01-01T00:00:01Z"}]}') == to_us(datetime(2025, 1, 1, 0, 0,
    ...     2, tzinfo=UTC))
    True
    >>> event_time_of("vitals", b"not json") is None
    True
    """
    if value is None:
        return None
    try:
        obj = orjson.loads(value)
        if topic in _OBSERVATION_TOPICS:
            times = [datetime.fromisoformat(m["observed_at"]) for m in obj["measurements"]]
            at = max(times)
        elif topic in _EVENT_TIME_FIELD:
            at = datetime.fromisoformat(obj[_EVENT_TIME_FIELD[topic]])
        else:
            return None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if at.tzinfo is None:
        return None
    return to_us(at)


def utc_text(at: datetime) -> str:
    """A UTC time as the payloads write it (pydantic's JSON form).

    >>> utc_text(datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC))
    '2026-01-02T03:04:05.006000Z'
    """
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _shifted(data: Any, delta: timedelta) -> Any:
    if isinstance(data, datetime):
        return data + delta
    if isinstance(data, dict):
        return {k: _shifted(v, delta) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_shifted(v, delta) for v in data]
    return data


def rewrite_value(
    topic: str,
    value: bytes,
    *,
    shift: timedelta | None = None,
    received_at: datetime | None = None,
) -> bytes:
    """The payload with every timestamp moved by ``shift`` and ``received_at`` restamped.

    Every datetime field of the payload's model moves (observation, period start,
    condition-since...), so intervals inside a message are kept: the payload is validated
    and re-serialised (~5k records/s). Without a shift only ``received_at`` is rewritten,
    in the JSON itself. Raises ValueError when ``value`` is not a valid payload of
    ``topic`` (not JSON, or with a shift, not valid).

    >>> from datetime import UTC
    >>> v = (b'{"kind":"weight","patient_id":"p1","observed_at":"2025-01-01T00:00:00Z",'
    ...      b'"received_at":"2025-01-01T00:00:01Z","weight_kg":70.0,'
    ...      b'"source":{"adapter":"context"}}')
    >>> out = orjson.loads(rewrite_value("context", v, shift=timedelta(days=1),
    ...     received_at=datetime(2026, 5, 1, tzinfo=UTC)))
    >>> out["observed_at"], out["received_at"]
    ('2025-01-02T00:00:00Z', '2026-05-01T00:00:00Z')
    """
    model = payload_model(topic)
    if model is None:
        raise ValueError(f"unknown topic {topic!r}: no schema to shift its timestamps with")
    if not shift:  # restamp only: edit the JSON (fast; the payload was validated upstream)
        obj = orjson.loads(value)
        if received_at is not None and isinstance(obj, dict) and "received_at" in obj:
            obj["received_at"] = utc_text(received_at)
            return orjson.dumps(obj)
        return value
    payload = model.model_validate_json(value)
    data = payload.model_dump(mode="python")
    if shift:
        data = _shifted(data, shift)
    if received_at is not None and isinstance(data, dict) and "received_at" in data:
        data["received_at"] = received_at
    return model.model_validate(data).model_dump_json().encode()


# --- replay order and pacing ---------------------------------------------------------


@dataclass
class OrderStats:
    """How far the file order had to be changed to replay in event-time order."""

    beyond_window: int = 0  # records sent after a later one: the window was too small


def replay_order(
    records: Iterable[RecordedRecord], window: int = 100_000, stats: OrderStats | None = None
) -> Iterator[RecordedRecord]:
    """Records in event-time order, each (topic, partition) kept in its recorded order.

    A record's sort time is the running maximum of event times in its partition, so a
    late sample (older than its predecessor) stays right behind that predecessor: per-
    patient order is what the partition had, whatever the window. Across partitions the
    file order is rearranged within a window of ``window`` records (memory bound); a record
    that would have belonged further back is sent at once and counted in ``stats``.

    >>> def r(p, o, t): return RecordedRecord("vitals", p, o, b"k", b"v", 0, event_time_us=t)
    >>> [(x.partition, x.offset) for x in replay_order([r(0, 0, 5), r(0, 1, 3), r(1, 0, 4)])]
    [(1, 0), (0, 0), (0, 1)]
    """
    heap: list[tuple[int, int, RecordedRecord]] = []
    running: dict[tuple[str, int], int] = {}
    last_sent: int | None = None
    for seq, record in enumerate(records):
        stream = (record.topic, record.partition)
        sort_us = max(record.sort_time_us, running.get(stream, record.sort_time_us))
        running[stream] = sort_us
        heapq.heappush(heap, (sort_us, seq, record))
        if len(heap) > window:
            sort_us, _seq, out = heapq.heappop(heap)
            if stats is not None and last_sent is not None and sort_us < last_sent:
                stats.beyond_window += 1
            last_sent = sort_us if last_sent is None else max(last_sent, sort_us)
            yield out
    while heap:
        sort_us, _seq, out = heapq.heappop(heap)
        if stats is not None and last_sent is not None and sort_us < last_sent:
            stats.beyond_window += 1
        last_sent = sort_us if last_sent is None else max(last_sent, sort_us)
        yield out


class Pacer:
    """Holds each record back until its event time, scaled by ``speed``, has come.

    The first record anchors the schedule: a record ``d`` seconds of event time after it
    is due ``d / speed`` seconds of wall time after the first was sent. ``speed=None`` =
    no pacing. ``sleep(seconds)`` returns True when interrupted (e.g. ``Event.wait``).
    Event time never goes backwards for the schedule (the running maximum is used).

    >>> now = [100.0]
    >>> waits = []
    >>> def sleep(s): waits.append(s); now[0] += s; return False
    >>> p = Pacer(2.0, clock=lambda: now[0], sleep=sleep)
    >>> [p.wait_until(t) for t in (0, 1_000_000, 500_000, 4_000_000)]
    [False, False, False, False]
    >>> waits
    [0.5, 1.5]
    """

    def __init__(
        self,
        speed: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], bool],
    ) -> None:
        if speed is not None and not speed > 0:
            raise ValueError("speed must be positive (or None for no pacing)")
        self.speed = speed
        self._clock = clock
        self._sleep = sleep
        self._anchor: tuple[float, int] | None = None
        self._reached_us: int | None = None

    def due(self, event_us: int) -> float | None:
        """Wall-clock time (on ``clock``) the record is due; None before the anchor."""
        if self.speed is None or self._anchor is None:
            return None
        wall0, event0 = self._anchor
        return wall0 + (max(event_us, self._reached_us or event_us) - event0) / 1e6 / self.speed

    def wait_until(self, event_us: int) -> bool:
        """Sleep until the record is due; True when the sleep was interrupted."""
        if self.speed is None:
            return False
        if self._anchor is None:
            self._anchor = (self._clock(), event_us)
            self._reached_us = event_us
            return False
        due = self.due(event_us)
        self._reached_us = max(event_us, self._reached_us or event_us)
        delay = (due or 0.0) - self._clock()
        return self._sleep(delay) if delay > 0 else False
