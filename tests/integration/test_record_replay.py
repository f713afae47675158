"""Record and replay through the real broker and worker: a recording of a simulator run's raw
topics, replayed at a real-time pace (20x) and at full speed into two fresh deployments
(own topic prefix, own worker), gives byte-identical alert events apart from the two
wall-clock fields (``raised_at``, ``trigger_received_at``), patient by patient, and the same
events as the worker's pipeline run without Kafka on the simulated records.

``VIGIL_TEST_RECORDING=/path/run.vrec.gz`` replays that recording instead of making one
(then only the two replays are compared with each other).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from services.recording import Recording
from services.sim.engine import IcuConfig, simulate_icu
from services.sim.scenarios import parse_scenario
from streams.offline import OfflinePipeline
from streams.rules import load_rules
from tests.support.stack import Stack, unique_prefix

START = datetime(2026, 7, 2, 6, 0, tzinfo=UTC)
BEDS, SEED, DURATION_S = 6, 5, 400
SCENARIOS = (
    "hypotension:bed=1,onset=20,duration=600",
    "cerebral_desaturation:bed=2,onset=30,duration=600,severity=1.5",
    "device_disconnect:bed=3,onset=100,duration=120,device=monitor",
    "hypotension:bed=4,onset=60,duration=200,severity=1.5",
    "cerebral_desaturation:bed=5,onset=40,duration=150,side=left",
    "device_disconnect:bed=6,onset=90,duration=120,device=nirs",
)
WALL_CLOCK_FIELDS = ("raised_at", "trigger_received_at")
PACED_SPEED = "20"


def simulate_args() -> list[str]:
    args = ["simulate", "--beds", str(BEDS), "--seed", str(SEED), "--duration", str(DURATION_S)]
    args += ["--start", START.strftime("%Y-%m-%dT%H:%M:%SZ"), "--no-default-scenarios"]
    for scenario in SCENARIOS:
        args += ["--scenario", scenario]
    return [*args, "--speed", "max"]


def make_recording(bootstrap: str, workdir: Path) -> Path:
    """Simulate into a deployment of its own, then record its raw topics from the start."""
    source = Stack(bootstrap, workdir, unique_prefix("src"))
    source.create_topics()
    done = source.vigil(*simulate_args(), timeout_s=300)
    assert done.returncode == 0, done.stderr
    out = workdir / "run.vrec.gz"
    recorded = subprocess.run(  # `vigil record`, by its module (registered in services.cli)
        [
            sys.executable,
            "-m",
            "services.cli_record",
            "--topics",
            "raw",
            "--out",
            str(out),
            "--from-beginning",
            "--until-idle",
            "3",
        ],
        env=source.env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert recorded.returncode == 0, recorded.stderr
    assert "stopped by idle" in recorded.stderr, recorded.stderr
    return out


def canonical(value: bytes) -> str:
    """The alert event's JSON with the wall-clock fields removed, field order kept."""
    event = json.loads(value)
    for name in WALL_CLOCK_FIELDS:
        event.pop(name, None)
    return json.dumps(event, separators=(",", ":"))


def replayed(bootstrap: str, workdir: Path, recording: Path, speed: str) -> dict[str, list[str]]:
    """Per patient (the alerts topic's key), the alert events in topic order."""
    stack = Stack(bootstrap, workdir, unique_prefix(f"rp{speed}"))
    try:
        stack.create_topics()
        stack.start_worker()
        done = stack.vigil("replay", str(recording), "--speed", speed, timeout_s=300)
        assert done.returncode == 0, done.stderr
        assert "0 not acknowledged" in done.stderr, done.stderr
        stack.wait_until_processed("vitals")
        stack.wait_until_processed("nirs")
        records = stack.read_records("alerts")
    finally:
        stack.stop_all()
    found: dict[str, list[str]] = {}
    for key, value in records:
        assert key is not None
        found.setdefault(key.decode(), []).append(canonical(value))
    return found


def without_kafka() -> dict[str, list[str]]:
    config = IcuConfig(
        beds=BEDS,
        seed=SEED,
        start=START,
        duration_s=DURATION_S,
        scenarios=tuple(parse_scenario(s) for s in SCENARIOS),
    )
    pipeline = OfflinePipeline(load_rules())
    found: dict[str, list[str]] = {}
    for _second, records in simulate_icu(config, clock=lambda: START):
        for record in records:
            for draft in pipeline.feed(record.topic, record.payload):
                event = draft.to_event(raised_at=START)
                found.setdefault(event.patient_id, []).append(
                    canonical(event.model_dump_json().encode())
                )
    return found


def test_a_recording_replayed_at_20x_and_at_full_speed_gives_identical_alerts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    given = os.environ.get("VIGIL_TEST_RECORDING")
    recording = Path(given) if given else make_recording(kafka_bootstrap, tmp_path / "src")
    with Recording(recording) as opened:
        recorded = sum(1 for _ in opened)
        assert opened.end is not None
        assert opened.end["records"] == recorded
    assert recorded > 1000
    paced = replayed(kafka_bootstrap, tmp_path / "paced", recording, PACED_SPEED)
    full = replayed(kafka_bootstrap, tmp_path / "max", recording, "max")
    events = sum(len(v) for v in full.values())
    rules = {(json.loads(e)["rule_id"], json.loads(e)["phase"]) for v in full.values() for e in v}
    print(  # the figures for the README: alerts compared, wall time
        f"\nrecord/replay determinism: {recorded} records, {events} alert events compared,"
        f" {time.monotonic() - started:.0f} s"
    )
    assert paced == full
    if not given:
        assert {
            ("perfusion.map_low", "start"),
            ("brain.rso2_drop_from_baseline", "start"),
            ("technical.vitals_no_data", "start"),
            ("technical.vitals_no_data", "end"),
            ("technical.nirs_no_data", "end"),
            ("perfusion.map_low", "end"),
            ("brain.rso2_asymmetry", "end"),
        } <= rules
        assert full == without_kafka()
    else:
        assert events > 0, "the given recording raised no alert: nothing was compared"
