"""The risk agent on a real broker: a PhysioNet replay through the worker gives RiskScores;
a SIGKILLed agent comes back with the model it had."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.alerts import AlertEvent
from schemas.derived import RiskScore
from services import procs
from streams.risk.engine import loads
from tests.support.stack import STARTED_PIDS, Stack, unique_prefix, wait_for

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PHYSIONET = DATA / "physionet2019" / "setA.psv.tar.gz"
START = "2030-06-01T08:00:00Z"

pytestmark = pytest.mark.skipif(not PHYSIONET.exists(), reason="../shared/data not present")


def start_agent(stack: Stack, checkpoint: Path, name: str) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "services.cli_risk",
        "risk",
        "--checkpoint",
        str(checkpoint),
        "--checkpoint-every",
        "1",
        "--metrics-port",
        "0",
        "--min-learned",
        "50",
        "--min-positives",
        "1",
    ]
    proc = procs.spawn(argv, env=stack.env(), log_path=stack.workdir / f"{name}.log")
    STARTED_PIDS.append(proc.pid)
    stack.processes.append(proc)
    return proc


def replay(stack: Stack, *args: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli_replay",
            str(PHYSIONET),
            "--speed",
            "max",
            "--start",
            START,
            *args,
        ],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def scores(stack: Stack) -> list[RiskScore]:
    return [RiskScore.model_validate_json(v) for v in stack.read_all("risk", idle_s=2)]


def risk_alerts(stack: Stack) -> list[AlertEvent]:
    alerts = (AlertEvent.model_validate_json(v) for v in stack.read_all("alerts", idle_s=2))
    return [a for a in alerts if a.rule_id.startswith("risk.")]


def test_replay_gives_risk_scores_and_a_killed_agent_keeps_its_model(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, tmp_path, unique_prefix("risk"))
    stack.create_topics()
    checkpoint = tmp_path / "risk.ckpt"
    try:
        stack.start_worker()
        agent = start_agent(stack, checkpoint, "risk-1")
        replay(stack, "--patients", "8")
        stack.wait_until_processed("context")

        def learned_something() -> bool:
            return checkpoint.exists() and loads(checkpoint.read_bytes()).model.learned > 0

        wait_for(learned_something, 90, "the agent to learn labels", stack.worker_log)
        first = scores(stack)
        assert first
        assert {s.patient_id for s in first} <= {f"p{n:06d}" for n in range(1, 10)}
        assert all(s.outcome == "sepsis" and s.cold_start for s in first[:5])
        before = loads(checkpoint.read_bytes())
        assert before.model.learned > 0

        # p000008's cold-start score reaches the threshold (SOFA rise 2) from 12:00 to
        # 16:00 after admission: a risk alert through the worker's alarm engine, held
        # for the rule's 10-min on-delay on the risk topic's own clock.
        def sepsis_alert() -> bool:
            return any(
                a.rule_id == "risk.sepsis_high" and a.phase == "start" for a in risk_alerts(stack)
            )

        wait_for(sepsis_alert, 90, "a risk alert from the replay", stack.worker_log)
        started = [a for a in risk_alerts(stack) if a.phase == "start"]
        assert {a.patient_id for a in started} <= {f"p{n:06d}" for n in range(1, 10)}
        assert all(a.values["risk_sepsis_threshold_ratio"] >= 1.0 for a in started)

        os.kill(agent.pid, signal.SIGKILL)  # no shutdown checkpoint
        agent.wait(10)
        start_agent(stack, checkpoint, "risk-2")
        replay(stack, "--patient", "p000011", "--patient", "p000012")
        wait_for(
            lambda: any(s.patient_id == "p000012" for s in scores(stack)),
            90,
            "risk scores of the patients replayed after the restart",
            stack.worker_log,
        )
        later = [s for s in scores(stack) if s.patient_id in ("p000011", "p000012")]
        lineage = before.model_version.rsplit(".", 1)[0]
        assert all(s.model_version.startswith(lineage + ".") for s in later)
        assert min(int(s.model_version.rsplit(".", 1)[1]) for s in later) >= before.model.learned
    finally:
        stack.stop_all()
