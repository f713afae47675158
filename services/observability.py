"""What every Vigil process shares for operations: probes, /metrics, and logging.

- :class:`Probes` holds a process's liveness and readiness checks (plain callables).
- :func:`serve_probes` serves ``/metrics`` (Prometheus), ``/healthz`` (liveness) and
  ``/readyz`` (readiness) on one port from a daemon thread (a WSGI app over
  ``prometheus_client.make_wsgi_app``); :func:`with_probes` adds ``/readyz`` and
  ``/metrics`` to an ASGI app (the display) that serves ``/healthz`` itself.
  A probe answers 200 with ``{"status": "ok", "checks": {...}}`` or 503 with
  ``"status": "fail"`` and the checks that failed.
- :func:`configure_logging` is the one logging setup (``vigil`` main(), the worker):
  ``VIGIL_LOG_FORMAT=json`` (one JSON object a line) or ``text``; unset, JSON when
  stderr is not a terminal (containers, ``vigil run``'s log files), text on a terminal.
  Every handler it installs carries :class:`RedactPatientIdentifiers`.

Patient identifiers never reach a log line: the filter replaces the values of known
identifier fields (``patient_id``, ``mrn``, names ...) passed as ``extra``, the same
values wherever they occur in the message, ``key=value`` / JSON pairs of those fields,
HL7 PID segments, and the id shapes Vigil's sources use (``sim-001``, PhysioNet
``p000123``, ``mimic3-10006``, ``mimic2-s00001``). Code passes a patient id as
``extra={"patient_id": ...}`` if at all, never in the message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

Check = Callable[[], bool]
"""A probe check: True when fine. An exception counts as a failure."""

# ------------------------------------------------------------------------ probes


@dataclass
class Probes:
    """A process's liveness and readiness checks, by name.

    >>> probes = Probes()
    >>> probes.ready("producer", lambda: False)
    >>> probes.liveness()
    (True, {})
    >>> probes.readiness()
    (False, {'producer': False})
    """

    live: dict[str, Check] = field(default_factory=dict)
    readies: dict[str, Check] = field(default_factory=dict)

    def alive(self, name: str, check: Check) -> None:
        """Add a liveness check (failing means: restart this process)."""
        self.live[name] = check

    def ready(self, name: str, check: Check) -> None:
        """Add a readiness check (failing means: do not count on it yet)."""
        self.readies[name] = check

    def liveness(self) -> tuple[bool, dict[str, bool]]:
        return _run(self.live)

    def readiness(self) -> tuple[bool, dict[str, bool]]:
        """Ready only when alive too."""
        ok_live, live = _run(self.live)
        ok_ready, ready = _run(self.readies)
        return ok_live and ok_ready, {**live, **ready}


def _run(checks: Mapping[str, Check]) -> tuple[bool, dict[str, bool]]:
    results: dict[str, bool] = {}
    for name, check in checks.items():
        try:
            results[name] = bool(check())
        except Exception:  # a check that cannot answer is a failing check
            log.debug("probe check %s raised", name, exc_info=True)
            results[name] = False
    return all(results.values()), results


def probe_body(ok: bool, checks: Mapping[str, bool]) -> tuple[int, bytes]:
    """(HTTP status, JSON body) of a probe answer."""
    body = {"status": "ok" if ok else "fail", "checks": dict(checks)}
    return (200 if ok else 503), json.dumps(body, sort_keys=True).encode()


# ------------------------------------------------------------------------ HTTP

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def probe_wsgi_app(probes: Probes, registry: CollectorRegistry = REGISTRY) -> WsgiApp:
    """``/healthz``, ``/readyz``, and ``/metrics`` (also ``/``) as one WSGI app."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/readyz"):
            ok, checks = probes.liveness() if path == "/healthz" else probes.readiness()
            status, body = probe_body(ok, checks)
            reason = "OK" if status == 200 else "Service Unavailable"
            start_response(
                f"{status} {reason}",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        if path in ("/metrics", "/"):
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics, /healthz, /readyz\n"]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: Prometheus scrapes every few seconds."""


class ProbeServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` served from a daemon thread."""

    def __init__(self, host: str, port: int, probes: Probes, registry: CollectorRegistry) -> None:
        self.probes = probes
        self._server = make_server(
            host,
            port,
            probe_wsgi_app(probes, registry),
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_probes(
    host: str, port: int, probes: Probes | None = None, registry: CollectorRegistry = REGISTRY
) -> ProbeServer:
    """Serve the probes and metrics on ``host:port`` (0 = any free port); OSError if taken."""
    server = ProbeServer(host, port, probes or Probes(), registry)
    log.info("metrics and probes on http://%s:%d/metrics (/healthz, /readyz)", host, server.port)
    return server


Asgi = Callable[[dict[str, Any], Any, Any], Any]


def with_probes(
    app: Asgi,
    probes: Probes,
    registry: CollectorRegistry = REGISTRY,
    paths: Iterable[str] = ("/readyz", "/metrics"),
) -> Asgi:
    """``app`` with the probe ``paths`` answered in front of it (HTTP GET only)."""
    served = frozenset(paths)

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope.get("type") != "http" or path not in served:
            await app(scope, receive, send)
            return
        if path == "/metrics":
            status, body, kind = 200, generate_latest(registry), CONTENT_TYPE_LATEST
        else:
            ok, checks = probes.liveness() if path == "/healthz" else probes.readiness()
            status, body = probe_body(ok, checks)
            kind = "application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", kind.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return wrapped


# ------------------------------------------------------------------------ logging

REDACTED = "[redacted]"
IDENTIFIER_FIELDS = frozenset(
    {
        "patient_id",
        "patient",
        "mrn",
        "subject_id",
        "hadm_id",
        "icustay_id",
        "patient_name",
        "family_name",
        "given_name",
        "birth_date",
        "date_of_birth",
    }
)
"""Log-record ``extra`` fields (and ``key=value`` / JSON keys) whose values are identifiers."""

_FIELD_ALTERNATION = "|".join(sorted(IDENTIFIER_FIELDS, key=len, reverse=True))
_KEY_VALUE = re.compile(
    rf"""(?P<key>["']?\b(?:{_FIELD_ALTERNATION})\b["']?\s*[:=]\s*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^\s,;)}\]|]+)""",
    re.IGNORECASE,
)
_ID_SHAPES = re.compile(
    r"\bsim-\d+\b(?!-)"  # simulator beds: sim-001 (not sim-7-20261122T... run ids)
    r"|\bp\d{6}\b"  # PhysioNet 2019: p000123
    r"|\bmimic[23]-[A-Za-z0-9]+\b"  # MIMIC replays: mimic3-10006, mimic2-s00001
)
_PID_SEGMENT = re.compile(r"(?m)(?<![A-Za-z])PID\|[^\r\n]*")  # HL7 patient identification


def redact(text: str, known: Iterable[str] = ()) -> str:
    """``text`` without patient identifiers (``known``: values to remove wherever they occur).

    >>> redact("sim-004 MAP low, patient_id='H12345', run sim-7-20261122T090000Z")
    "[redacted] MAP low, patient_id='[redacted]', run sim-7-20261122T090000Z"
    >>> redact("MRN 4711 paged at t=47110", known=["4711"])
    'MRN [redacted] paged at t=47110'
    >>> redact('{"patient_id": "p000123", "value": 1}')
    '{"patient_id": "[redacted]", "value": 1}'
    """
    for value in sorted({v for v in known if v}, key=len, reverse=True):
        # as a whole token: patient "12" must not turn "t=1200" into "t=[redacted]00"
        text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", REDACTED, text)
    text = _PID_SEGMENT.sub("PID|" + REDACTED, text)

    def field_value(match: re.Match[str]) -> str:
        value = match.group("value")
        quote = value[0] if value[:1] in ('"', "'") else ""
        return f"{match.group('key')}{quote}{REDACTED}{quote}"

    text = _KEY_VALUE.sub(field_value, text)
    return _ID_SHAPES.sub(REDACTED, text)


class RedactPatientIdentifiers(logging.Filter):
    """Rewrites a record so that no patient identifier leaves the process in it.

    Renders the message with its arguments, redacts it (and the exception text), and
    replaces the values of identifier ``extra`` fields. Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        known: list[str] = []
        for name in IDENTIFIER_FIELDS & record.__dict__.keys():
            value = record.__dict__[name]
            if value is not None:
                known.append(str(value))
                record.__dict__[name] = REDACTED
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what can be shown
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message, known), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, known)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, known)
        return True


_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's message with terminal colour codes
}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, extras.

    Extras are the ``extra={...}`` fields of the call (JSON-encoded, ``str`` otherwise);
    ``exception`` holds the traceback when there is one.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LOGGERS = ("kafka", "aiokafka")


def log_format(env: Mapping[str, str] | None = None, stream: Any = None) -> LogFormat:
    """``VIGIL_LOG_FORMAT`` (json|text); unset or ``auto``: text on a terminal, else JSON.

    >>> log_format({"VIGIL_LOG_FORMAT": "JSON"})
    'json'
    >>> log_format({}, stream=None)
    'json'
    """
    chosen = (os.environ if env is None else env).get("VIGIL_LOG_FORMAT", "auto").strip().lower()
    if chosen in ("json", "text"):
        return "json" if chosen == "json" else "text"
    if chosen not in ("", "auto"):
        raise ValueError(f"VIGIL_LOG_FORMAT must be json, text or auto, not {chosen!r}")
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure_logging(
    level: str | int = "INFO", fmt: LogFormat | None = None, stream: Any = None
) -> logging.Handler:
    """Replace the root logger's handlers with one redacting handler on ``stream``.

    Idempotent (call it again, e.g. after a library set up its own logging).
    """
    stream = sys.stderr if stream is None else stream
    fmt = fmt or log_format(stream=stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactPatientIdentifiers())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


class Heartbeat:
    """A loop's sign of life: ``beat()`` from the loop, ``live()`` from the probe thread.

    >>> now = [0.0]
    >>> heart = Heartbeat(stale_after_s=5, clock=lambda: now[0])
    >>> now[0] = 6.0; heart.live()
    False
    >>> heart.beat(); heart.live()
    True
    """

    def __init__(
        self, stale_after_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.last = clock()

    def beat(self) -> None:
        self.last = self.clock()

    def live(self) -> bool:
        return self.clock() - self.last <= self.stale_after_s
