"""The ``vigil`` commands that need no broker: ``schemas export`` and ``topics list``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from schemas.topics import TOPICS
from services.cli import main

# Keep a developer's or CI's own settings out of these runs.
CLEAN_ENV = {"VIGIL_TOPIC_PREFIX": None, "VIGIL_PARTITIONS": None, "VIGIL_LOG_LEVEL": None}


def test_schemas_export_writes_one_schema_per_topic(tmp_path: Path) -> None:
    out = tmp_path / "published" / "schemas"
    result = CliRunner().invoke(main, ["schemas", "export", str(out)], env=CLEAN_ENV)
    assert result.exit_code == 0, result.output
    files = sorted(out.iterdir())
    assert len(files) == len(TOPICS) == 11
    assert [p.name for p in files] == sorted(f"{s.base_name}.schema.json" for s in TOPICS)
    # It says what it wrote, one path per line.
    assert sorted(result.output.split()) == sorted(str(p) for p in files)
    for path in files:
        Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_schemas_export_refuses_a_file_as_directory(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "schemas.json"
    not_a_dir.write_text("{}")
    result = CliRunner().invoke(main, ["schemas", "export", str(not_a_dir)], env=CLEAN_ENV)
    assert result.exit_code == 2
    assert "is a file" in result.output


@pytest.mark.parametrize("prefix", ["hospA.icu.", "test-7_"])
def test_topics_list_prints_every_topic_with_the_configured_prefix(prefix: str) -> None:
    env = {**CLEAN_ENV, "VIGIL_TOPIC_PREFIX": prefix, "VIGIL_PARTITIONS": "12"}
    result = CliRunner().invoke(main, ["topics", "list"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == len(TOPICS)
    for spec, line in zip(TOPICS, lines, strict=True):
        name, *rest = line.split()
        assert name == prefix + spec.base_name
        assert spec.payload.__name__ in rest
    by_name = {line.split()[0]: line for line in lines}
    assert "partitions=12" in by_name[prefix + "vitals"]
    deadletter = by_name[prefix + "deadletter"]
    assert "partitions=1 " in deadletter
    assert "retention=forever" in deadletter
    assert "retention=7 d" in by_name[prefix + "vitals"]


def test_topics_list_uses_the_default_prefix_without_configuration() -> None:
    result = CliRunner().invoke(main, ["topics", "list"], env=CLEAN_ENV)
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()] == [
        "icu." + spec.base_name for spec in TOPICS
    ]


def test_topics_list_refuses_an_invalid_prefix() -> None:
    result = CliRunner().invoke(
        main, ["topics", "list"], env={**CLEAN_ENV, "VIGIL_TOPIC_PREFIX": "icu/"}
    )
    assert result.exit_code == 2  # a usage error, not a traceback
    assert "VIGIL_TOPIC_PREFIX" in result.output
