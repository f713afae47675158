"""services.observability (probes, /metrics server, JSON logs, redaction) and the worker's
status watch in streams.metrics (lag, active alarms, readiness), without Kafka."""

from __future__ import annotations

import ast
import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from services.observability import (
    REDACTED,
    JsonFormatter,
    Probes,
    RedactPatientIdentifiers,
    configure_logging,
    log_format,
    redact,
    serve_probes,
    with_probes,
)
from services.simulator import HypotensionEpisode, SimulationConfig, patient_id_of, simulate
from streams import metrics
from streams.metrics import WorkerWatch
from streams.offline import OfflinePipeline
from streams.rules import load_rules

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------ probes


def test_probes_fail_on_a_false_or_raising_check_and_readiness_needs_liveness() -> None:
    state = {"loop": True, "kafka": False}
    probes = Probes()
    probes.alive("event_loop", lambda: state["loop"])
    probes.ready("kafka", lambda: state["kafka"])
    probes.ready("broken", lambda: 1 / 0 > 0)
    assert probes.liveness() == (True, {"event_loop": True})
    assert probes.readiness() == (False, {"event_loop": True, "kafka": False, "broken": False})
    probes.readies.pop("broken")
    state["kafka"] = True
    assert probes.readiness()[0] is True
    state["loop"] = False
    assert probes.readiness() == (False, {"event_loop": False, "kafka": True})


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("vigil_test_records_total", "Records", ["source"], registry=registry).labels(
        "vitals"
    ).inc(3)
    return registry


def test_probe_server_serves_metrics_health_and_readiness_on_one_port(
    registry: CollectorRegistry,
) -> None:
    ready = {"kafka": False}
    probes = Probes()
    probes.alive("event_loop", lambda: True)
    probes.ready("kafka", lambda: ready["kafka"])
    server = serve_probes("127.0.0.1", 0, probes, registry)
    try:
        status, kind, body = _get(server.port, "/metrics")
        assert status == 200
        assert kind.startswith("text/plain")
        assert 'vigil_test_records_total{source="vitals"} 3.0' in body.decode()

        assert _get(server.port, "/healthz")[0] == 200
        assert json.loads(_get(server.port, "/healthz")[2]) == {
            "status": "ok",
            "checks": {"event_loop": True},
        }
        status, kind, body = _get(server.port, "/readyz")
        assert (status, kind) == (503, "application/json")
        assert json.loads(body) == {
            "status": "fail",
            "checks": {"event_loop": True, "kafka": False},
        }
        ready["kafka"] = True
        assert _get(server.port, "/readyz")[0] == 200
        assert _get(server.port, "/nothing")[0] == 404
    finally:
        server.close()
    with pytest.raises(OSError, match="refused"):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=1)


def test_a_taken_port_is_an_error_not_a_silent_second_server(registry: CollectorRegistry) -> None:
    first = serve_probes("127.0.0.1", 0, Probes(), registry)
    try:
        with pytest.raises(OSError, match="in use"):
            serve_probes("127.0.0.1", first.port, Probes(), registry)
    finally:
        first.close()


def test_asgi_app_gets_readyz_and_metrics_in_front_and_keeps_its_own_routes(
    registry: CollectorRegistry,
) -> None:
    async def health(_request: Request) -> Response:
        return JSONResponse({"ok": True, "from": "app"})

    caught_up = {"value": False}
    probes = Probes()
    probes.ready("kafka_caught_up", lambda: caught_up["value"])
    app = with_probes(Starlette(routes=[Route("/healthz", health)]), probes, registry)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"ok": True, "from": "app"}
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "fail", "checks": {"kafka_caught_up": False}}
        caught_up["value"] = True
        assert client.get("/readyz").status_code == 200
        metrics_page = client.get("/metrics")
        assert metrics_page.headers["content-type"].startswith("text/plain")
        assert "vigil_test_records_total" in metrics_page.text
        assert client.get("/missing").status_code == 404


# ------------------------------------------------------------------------ redaction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sim-001 MAP low", f"{REDACTED} MAP low"),
        ("PhysioNet p000123 done", f"PhysioNet {REDACTED} done"),
        ("replaying mimic3-10006 and mimic2-s00001", f"replaying {REDACTED} and {REDACTED}"),
        ("CRRT v=1 patient=MRN3 device=PF-1", f"CRRT v=1 patient={REDACTED} device=PF-1"),
        ("{'patient_id': 'H-77', 'value': 5}", f"{{'patient_id': '{REDACTED}', 'value': 5}}"),
        ('{"mrn":"0042","hr":80}', f'{{"mrn":"{REDACTED}","hr":80}}'),
        ("subject_id=123 hadm_id=456", f"subject_id={REDACTED} hadm_id={REDACTED}"),
        (
            "MSH|^~\\&|X\rPID|1||4711^^^HOSP^MR||DOE^JANE\rOBX|1",
            f"MSH|^~\\&|X\rPID|{REDACTED}\rOBX|1",
        ),
    ],
)
def test_redact_removes_identifier_shapes_and_fields(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "run sim-7-20261122T090000Z, device sim-monitor-001",
        "state of one patient not written; its records stay pending",
        "icu.vitals[3]@1200 failed; dead-lettered",
        "worker vigil-worker: 29 rules, topics icu.*",
        "p99 latency 0.25 s over 123456 records",
    ],
)
def test_redact_keeps_text_without_identifiers(text: str) -> None:
    assert redact(text) == text


def _record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "vigil.test", "levelno": logging.WARNING})
    record.levelname, record.msg, record.args = "WARNING", msg, args
    record.__dict__.update(extra)
    return record


def test_filter_redacts_identifier_extras_wherever_their_values_appear() -> None:
    record = _record(
        "bed %s (%s) paged for %s", "ICU1-04", "H0042", "MAP", patient_id="H0042", mrn="99-1"
    )
    assert RedactPatientIdentifiers().filter(record) is True
    assert record.getMessage() == f"bed ICU1-04 ({REDACTED}) paged for MAP"
    assert record.__dict__["patient_id"] == REDACTED
    assert record.__dict__["mrn"] == REDACTED


def test_filter_redacts_exception_text() -> None:
    try:
        raise ValueError("no state for sim-004 (patient_id=H0042)")
    except ValueError:
        record = _record("record failed")
        record.exc_info = __import__("sys").exc_info()
    RedactPatientIdentifiers().filter(record)
    assert record.exc_text is not None
    assert "sim-004" not in record.exc_text
    assert "H0042" not in record.exc_text
    assert "ValueError" in record.exc_text


# ------------------------------------------------------------------------ JSON logs


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_logs_one_object_a_line_with_extras_and_no_patient_id(
    restore_root_logging: None,
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    configure_logging("INFO", "json", stream)  # idempotent: still one handler
    assert len(logging.getLogger().handlers) == 1
    log = logging.getLogger("streams.test")
    log.info(
        "alert raised for %s", patient_id_of(3), extra={"patient_id": patient_id_of(3), "rule": "x"}
    )
    log.debug("not shown at INFO")
    try:
        raise RuntimeError(f"state of {patient_id_of(3)} lost")
    except RuntimeError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {
        "time",
        "level",
        "logger",
        "message",
        "process",
        "thread",
        "patient_id",
        "rule",
    }
    assert first["level"] == "INFO"
    assert first["logger"] == "streams.test"
    assert first["message"] == f"alert raised for {REDACTED}"
    assert first["patient_id"] == REDACTED
    assert first["rule"] == "x"
    assert datetime.fromisoformat(first["time"]).tzinfo is not None
    assert second["level"] == "ERROR"
    assert "RuntimeError" in second["exception"]
    assert patient_id_of(3) not in stream.getvalue()


def test_text_logs_are_redacted_too(restore_root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream)
    logging.getLogger("x").warning("patient %s", "p000123")
    line = stream.getvalue().strip()
    assert line.endswith(f"WARNING x: patient {REDACTED}")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_log_format_setting() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert log_format({"VIGIL_LOG_FORMAT": "text"}) == "text"
    assert log_format({"VIGIL_LOG_FORMAT": " Json "}) == "json"
    assert log_format({}, stream=Tty()) == "text"
    assert log_format({"VIGIL_LOG_FORMAT": "auto"}, stream=io.StringIO()) == "json"
    with pytest.raises(ValueError, match="VIGIL_LOG_FORMAT"):
        log_format({"VIGIL_LOG_FORMAT": "xml"})


def test_json_formatter_encodes_unusual_extras() -> None:
    record = _record("ok", at=datetime(2026, 1, 1, tzinfo=UTC), path=Path("/x"))
    entry = json.loads(JsonFormatter().format(record))
    assert entry["at"] == "2026-01-01 00:00:00+00:00"
    assert entry["path"] == "/x"


_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
_IDENTIFYING = {"patient_id", "mrn", "subject_id", "hadm_id", "patient"}  # not "pid": processes


def _names(node: ast.AST) -> set[str]:
    found = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.add(child.id)
        elif isinstance(child, ast.Attribute):
            found.add(child.attr)
    return found


def test_no_log_call_interpolates_a_patient_identifier() -> None:
    """Patient ids go to logs only as ``extra={"patient_id": ...}`` (redacted), never as text."""
    offenders = []
    for path in sorted(
        p for d in ("schemas", "streams", "services") for p in (ROOT / d).rglob("*.py")
    ):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _LOG_METHODS
                and isinstance(node.func.value, ast.Name)
                and "log" in node.func.value.id.lower()
            ):
                continue
            if _names(ast.Tuple(elts=list(node.args), ctx=ast.Load())) & _IDENTIFYING:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


# ------------------------------------------------------------------------ worker watch


class _Consumer:
    def __init__(self, highwaters: dict[TP, int | None]) -> None:
        self.highwaters = highwaters
        self._read_offset: dict[TP, int | None] = {}
        self._committed_offset: dict[TP, int | None] = {}

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters[tp]


def _app(consumer: _Consumer, *, recovered: bool = True, started: bool = True) -> Any:
    completed = SimpleNamespace(is_set=lambda: recovered)
    return SimpleNamespace(
        started=started,
        in_recovery=False,
        consumer=consumer,
        tables=SimpleNamespace(recovery=SimpleNamespace(completed=completed)),
    )


def _sample(gauge: Gauge, *labels: str) -> float:
    value: float = (gauge.labels(*labels) if labels else gauge)._value.get()
    return value


def test_watch_reports_lag_per_input_partition_and_readiness() -> None:
    vitals0, vitals1, labs0 = TP("w.vitals", 0), TP("w.vitals", 1), TP("w.labs", 0)
    changelog = TP("w-app-patient-state-changelog", 0)
    consumer = _Consumer({vitals0: 120, vitals1: None, labs0: 7, changelog: 999})
    consumer._read_offset[vitals0] = 99  # read up to 99: 20 to go
    consumer._committed_offset[labs0] = 6  # nothing read since start, committed 6: caught up
    now = [100.0]
    watch = WorkerWatch(_app(consumer), list, load_rules(), clock=lambda: now[0])
    watch.update()
    assert _sample(metrics.CONSUMER_LAG, "w.vitals", "0") == 20
    assert _sample(metrics.CONSUMER_LAG, "w.labs", "0") == 0
    series = {s.labels["topic"] for s in metrics.CONSUMER_LAG.collect()[0].samples}
    assert "w.vitals" in series
    assert changelog.topic not in series
    assert watch.assigned == 3
    assert watch.recovered
    assert not watch.fetching
    assert not watch.ready()

    consumer.highwaters[vitals1] = 0
    watch.update()
    assert watch.fetching
    assert watch.ready()
    assert _sample(metrics.WORKER_READY) == 1

    del consumer.highwaters[vitals0]  # revoked: its series goes
    watch.update()
    series_left = {
        (s.labels["topic"], s.labels["partition"])
        for s in metrics.CONSUMER_LAG.collect()[0].samples
    }
    assert ("w.vitals", "0") not in series_left
    assert ("w.vitals", "1") in series_left

    now[0] += metrics.STALE_AFTER_S + 1  # the loop stopped running the watch
    assert not watch.live()
    assert not watch.ready()


def test_watch_is_not_ready_before_the_app_started_or_during_recovery() -> None:
    consumer = _Consumer({TP("s.vitals", 0): 5})
    assert not _ready_after_update(_app(consumer, started=False))
    assert not _ready_after_update(_app(consumer, recovered=False))
    assert _ready_after_update(_app(consumer))


def _ready_after_update(app: Any) -> bool:
    watch = WorkerWatch(app, list, load_rules())
    watch.update()
    return watch.ready()


def test_watch_counts_the_alarms_shown_by_priority_and_kind() -> None:
    rules = load_rules()
    config = SimulationConfig(
        beds=3,
        seed=5,
        start=datetime(2026, 6, 2, 9, 0, tzinfo=UTC),
        duration_s=600,
        episodes=(HypotensionEpisode(2, onset_s=60, duration_s=540),),
    )
    pipeline = OfflinePipeline(rules)
    for _t, batch in simulate(config):
        for sample in batch:
            pipeline.feed("vitals", sample)
    shown = [
        (str(a.priority), rules.get(a.rule_id).kind)
        for s in pipeline.patients.values()
        for a in s.alarms
    ]
    assert shown, "the hypotension episode raised an alarm"
    assert {s.patient_id for s in pipeline.patients.values() if s.alarms} == {patient_id_of(2)}

    watch = WorkerWatch(_app(_Consumer({})), lambda: pipeline.patients.values(), rules)
    watch.update()
    for priority in ("high", "medium", "low"):
        for kind in ("physiological", "technical"):
            expected = shown.count((priority, kind))
            assert _sample(metrics.ACTIVE_ALARMS, priority, kind) == expected, (priority, kind)

    watch.states = list  # the patients moved to another worker
    watch.update()
    assert sum(s.value for s in metrics.ACTIVE_ALARMS.collect()[0].samples) == 0


# ------------------------------------------------------------------------ display metrics


def test_display_metrics_sum_over_the_displays_serving() -> None:
    from services.display.server import DISPLAY_METRICS

    def figures(records: int, caught_up: bool) -> dict[str, Any]:
        return {"pages": 2, "records": records, "invalid_records": 1, "kafka_caught_up": caught_up}

    DISPLAY_METRICS.sources[-1] = lambda: figures(10, True)
    DISPLAY_METRICS.sources[-2] = lambda: figures(5, False)
    try:
        values = {s.name: s.value for f in DISPLAY_METRICS.collect() for s in f.samples}
    finally:
        DISPLAY_METRICS.sources.pop(-1)
        DISPLAY_METRICS.sources.pop(-2)
    assert values == {
        "vigil_display_pages": 4,
        "vigil_display_feed_records_total": 15,
        "vigil_display_invalid_records_total": 2,
        "vigil_display_kafka_caught_up": 0,
    }
