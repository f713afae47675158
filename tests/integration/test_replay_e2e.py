"""``vigil replay`` into a real broker: a slice of each dataset, read back from the topics."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from schemas.codes import Quantity
from schemas.context import ContextEvent
from schemas.observations import CrrtStatus, VitalSigns
from services.replay.source import open_source
from tests.support.stack import Stack, unique_prefix

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PHYSIONET = DATA / "physionet2019" / "setA.psv.tar.gz"
MIMIC3 = DATA / "mimic-iii-demo"
MIMIC2 = DATA / "mimic2-numerics" / "s00001_3975656n_numerics_1min.csv"
START = "2030-06-01T08:00:00Z"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")


def _replay(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli_replay", *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _expected(path: Path, **kwargs: object) -> Counter[tuple[str, str]]:
    from services.cli_replay import parse_start

    source = open_source(path, start=parse_start(START), **kwargs)  # type: ignore[arg-type]
    return Counter((r.topic, r.key) for r in source.records)


def test_replay_three_datasets_at_max_speed(kafka_bootstrap: str, tmp_path: Path) -> None:
    stack = Stack(kafka_bootstrap, tmp_path, unique_prefix("replay"))
    stack.create_topics()
    runs = [
        (PHYSIONET, ("--patients", "2")),
        (MIMIC3, ("--patient", "mimic3-44212")),
        (MIMIC2, ()),
    ]
    for path, extra in runs:
        done = _replay(stack, str(path), "--speed", "max", "--start", START, *extra)
        assert done.returncode == 0, done.stderr
        assert "0 not acknowledged" in done.stderr
    expected = (
        _expected(PHYSIONET, patients=2)
        + _expected(MIMIC3, only=frozenset({"mimic3-44212"}))
        + _expected(MIMIC2)
    )
    found: Counter[tuple[str, str]] = Counter()
    values: dict[str, list[bytes]] = {}
    for topic in ("vitals", "labs", "context", "crrt"):
        records = stack.read_records(topic, idle_s=2.0)
        values[topic] = [value for _key, value in records]
        found.update((topic, (key or b"").decode()) for key, _value in records)
    assert found == expected
    assert {key for _topic, key in found} == {"p000001", "p000002", "mimic3-44212", "mimic2-s00001"}

    # exact values: p000001 ICULOS 2 HR 97; CRRT blood flow 200 ml/min; MIMIC-II minute 14
    vitals = [VitalSigns.model_validate_json(v) for v in values["vitals"]]
    p1 = [v for v in vitals if v.patient_id == "p000001"]
    assert p1[0].observed_at.isoformat() == "2030-06-01T10:00:00+00:00"
    assert p1[0].measurements[0].code == "8867-4"
    assert p1[0].measurements[0].value == 97.0
    crrt = [CrrtStatus.model_validate_json(v) for v in values["crrt"]]
    flows = [
        m.value or 0.0 for c in crrt for m in c.measurements
        if m.quantity is Quantity.CRRT_BLOOD_FLOW
    ]  # fmt: skip
    with (MIMIC3 / "derived_crrt_chartevents.csv").open() as handle:
        raw = [
            float(row["valuenum"]) for row in csv.DictReader(handle)
            if row["subject_id"] == "44212" and row["itemid"] == "224144"
        ]  # fmt: skip
    assert sorted(flows) == sorted(raw)
    assert 200.0 in flows
    m2 = [v for v in vitals if v.patient_id == "mimic2-s00001"]
    assert m2[14].observed_at.isoformat() == "2030-06-01T08:14:00+00:00"
    assert m2[14].value_of(Quantity.NBP_SYS) == 120.0
    labels = [ContextEvent.model_validate_json(v).root for v in values["context"]]
    assert sum(1 for e in labels if e.kind == "outcome_label") > 0
    # per patient, records arrive in event-time order (one key = one partition)
    times = [v.observed_at for v in p1]
    assert times == sorted(times)


def test_replay_fails_clearly_when_topics_are_missing(kafka_bootstrap: str, tmp_path: Path) -> None:
    stack = Stack(kafka_bootstrap, tmp_path, unique_prefix("replay-missing"))
    done = _replay(stack, str(MIMIC2), "--speed", "max")
    assert done.returncode != 0
    assert "missing" in done.stderr
    assert f"{stack.prefix}vitals" in done.stderr


def test_dry_run_prints_json_lines_without_kafka(tmp_path: Path) -> None:
    stack = Stack("127.0.0.1:9", tmp_path, unique_prefix("replay-dry"))
    done = _replay(stack, str(MIMIC2), "--dry-run", "--start", START)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == sum(_expected(MIMIC2).values())
    assert lines[0]["topic"] == "context"
    assert lines[1]["value"]["measurements"][0]["observed_at"] == "2030-06-01T08:00:00Z"
