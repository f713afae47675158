"""``vigil alerts tail`` filters (site, unit, minimum priority) and the published alert schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from schemas.alerts import AlertEvent
from services.alerts_tail import AlertFilter
from services.cli_alerts import alerts_group

T = datetime(2026, 5, 1, 14, 0, tzinfo=UTC)


def alert(**changes: Any) -> AlertEvent:
    fields: dict[str, Any] = {
        "event_id": "e1",
        "alert_id": "a1",
        "sequence": 0,
        "patient_id": "MRN-1",
        "bed": "ICU1-01",
        "care_unit": "ICU1",
        "site": "NORTH",
        "phase": "start",
        "priority": "medium",
        "rule_id": "perfusion.map_low",
        "rule_version": 1,
        "title": "MAP below 65 mmHg",
        "values": {"map_median_1min_mmhg": 58.0},
        "thresholds": {"map_median_1min_mmhg": 65.0},
        "condition_since": T,
        "triggered_at": T,
        "raised_at": T,
        "explanation": (),
        "source": "CLINICAL.md",
    }
    fields.update(changes)
    return AlertEvent(**fields)


@pytest.mark.parametrize(
    ("min_priority", "kept"),
    [("low", {"low", "medium", "high"}), ("medium", {"medium", "high"}), ("high", {"high"})],
)
def test_priority_is_a_minimum(min_priority: str, kept: set[str]) -> None:
    f = AlertFilter.of(min_priority=min_priority)
    assert {p for p in ("low", "medium", "high") if f.matches(alert(priority=p))} == kept


def test_sites_and_units_are_any_of_case_insensitive_and_combine_with_and() -> None:
    f = AlertFilter.of(sites=["north", "South"], units=["icu1"])
    assert f.matches(alert())
    assert f.matches(alert(site="SOUTH"))
    assert not f.matches(alert(site="EAST"))
    assert not f.matches(alert(care_unit="ICU2"))
    assert not f.matches(alert(site=None))  # unknown site never passes a site filter
    assert not f.matches(alert(care_unit=None))
    assert AlertFilter.of(units=["ICU2"]).matches(alert(care_unit="icu2", site=None))


def test_an_empty_filter_keeps_everything() -> None:
    f = AlertFilter.of()
    assert f.is_empty
    assert f.matches(alert(site=None, care_unit=None, priority="low", kind="technical"))
    assert not AlertFilter.of(min_priority="low").is_empty


def test_tail_refuses_an_unknown_priority() -> None:
    result = CliRunner().invoke(alerts_group, ["tail", "--priority", "urgent"])
    assert result.exit_code == 2
    assert "urgent" in result.output


def test_published_alert_schema_carries_site_unit_bed_and_validates_a_real_event(
    tmp_path: Path,
) -> None:
    from schemas.export import export_json_schemas

    paths = {p.name: p for p in export_json_schemas(tmp_path)}
    schema = json.loads(paths["alerts.schema.json"].read_text())
    Draft202012Validator.check_schema(schema)
    for name in ("site", "care_unit", "bed", "priority", "kind", "phase", "rule_id"):
        assert name in schema["properties"], name
    validator = Draft202012Validator(schema)
    validator.validate(json.loads(alert().model_dump_json()))
    wrong = json.loads(alert().model_dump_json()) | {"priority": "urgent"}
    assert list(validator.iter_errors(wrong))
