"""`vigil topics create` and `vigil run` (what `make run` starts) against real brokers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from kafka import KafkaAdminClient

from schemas.topics import TOPICS
from services import procs
from services.kafka_local import free_ports
from tests.conftest import processes_under
from tests.support.sockets import MllpClient, ack_code
from tests.support.stack import STARTED_PIDS, Stack, unique_prefix

PCD01_MESSAGE = (
    b"MSH|^~\\&|MON|ICU|VIGIL|HOSP|20260101120000+0000||ORU^R01|RUN-1|P|2.6\r"
    b"PID|||MRN-RUN^^^^MR\rOBR|1|||x|||20260101115900+0000\r"
    b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|94|262688^MDC_DIM_PERCENT^MDC"
)


def test_topics_create_makes_every_registry_topic_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, tmp_path, unique_prefix("topics"), partitions=3)
    first = stack.vigil("topics", "create")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created ") == len(TOPICS)
    again = stack.vigil("topics", "create")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("exists  ") == len(TOPICS)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    names = [stack.registry.name(spec.base_name) for spec in stack.registry]
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    finally:
        admin.close()
    assert described[stack.registry.vitals] == 3
    assert described[stack.registry.alerts] == 3
    assert described[stack.registry.deadletter] == 1


def _children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            continue
    return found


def test_vigil_run_shows_an_alert_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    """The embedded default: its own fresh broker, worker, listeners and simulator; an HL7
    message sent to the printed port is acknowledged; SIGINT stops all."""
    kafka_port, controller_port, metrics_port, hl7_port, display_port = free_ports(5)
    env = {key: value for key, value in os.environ.items() if key != "KAFKA_BOOTSTRAP_SERVERS"} | {
        "VIGIL_DATA_DIR": str(tmp_path),
        "VIGIL_KAFKA_PORT": str(kafka_port),
        "VIGIL_KAFKA_CONTROLLER_PORT": str(controller_port),
        "VIGIL_METRICS_PORT": str(metrics_port),
        "VIGIL_HL7_PORT": str(hl7_port),
        "VIGIL_DISPLAY_PORT": str(display_port),
        "PYTHONUNBUFFERED": "1",
    }
    out_path = tmp_path / "run.out"
    with out_path.open("wb") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "--beds", "4", "--speed", "60"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    STARTED_PIDS.append(run.pid)
    try:
        deadline = time.monotonic() + 150
        while "MAP below 65 mmHg" not in out_path.read_text() and time.monotonic() < deadline:
            assert run.poll() is None, out_path.read_text()
            time.sleep(0.5)
        output = out_path.read_text()
        assert "START  MEDIUM ICU1-01  sim-001  MAP below 65 mmHg" in output, output
        assert f"send HL7 v2 (MLLP) to 127.0.0.1:{hl7_port}" in output
        assert f"display: http://127.0.0.1:{display_port}/" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{display_port}/", timeout=10) as page:
            assert page.status == 200  # development mode: guests view the unit
        overview = f"http://127.0.0.1:{display_port}/api/overview"
        with urllib.request.urlopen(overview, timeout=10) as api:
            assert "MAP below 65 mmHg" in api.read().decode()  # the alarm is on the display
        client = MllpClient(hl7_port)
        try:
            assert ack_code(client.send(PCD01_MESSAGE)) == "AA"
        finally:
            client.close()
        children = _children_of(run.pid)
        assert len(children) >= 5, "broker, worker, risk agent, listeners, simulator: children"
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=120) == 0, out_path.read_text()
    finally:
        if run.poll() is None:
            procs.stop_pid(run.pid, group=False)
    assert "stopped." in out_path.read_text()
    assert [pid for pid in children if procs.pid_alive(pid)] == []
    assert processes_under(tmp_path) == []


def test_topic_layout_mismatch_and_missing_topics_are_refused_with_a_clear_error(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, tmp_path, unique_prefix("layout"), partitions=2)
    missing = stack.vigil("worker")
    assert missing.returncode == 1
    assert f"{stack.registry.vitals} is missing" in missing.stderr
    assert "vigil topics create" in missing.stderr
    no_topic = stack.vigil("simulate", "--beds", "1", "--duration", "5", "--speed", "max")
    assert no_topic.returncode == 1
    assert f"{stack.registry.vitals} is missing" in no_topic.stderr

    assert stack.vigil("topics", "create").returncode == 0
    stack.partitions = 4
    mismatch = stack.vigil("topics", "create")
    assert mismatch.returncode == 1
    assert f"{stack.registry.vitals} has 2 partitions, expected 4" in mismatch.stderr
