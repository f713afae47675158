"""The rules file (streams/rules.py): validation at start, and raise/clear conditions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.alerts import AlertPriority
from streams.rules import RulesError, ThresholdRule, load_rules

MAP_LOW: dict[str, Any] = {
    "id": "perfusion.map_low",
    "version": 1,
    "title": "MAP below 65 mmHg",
    "kind": "physiological",
    "priority": "medium",
    "feature": "map_median_1min_mmhg",
    "direction": "below",
    "threshold": 65.0,
    "hysteresis": 0.0,
    "on_delay_s": 300,
    "off_delay_s": 120,
    "source": "CLINICAL.md Perfusion: MAP < 65 mmHg (Sepsis-3); delays unverified",
}
MAP_VERY_LOW: dict[str, Any] = {
    **MAP_LOW,
    "id": "perfusion.map_very_low",
    "title": "MAP below 55 mmHg",
    "priority": "high",
    "threshold": 55.0,
    "on_delay_s": 120,
    "source": "CLINICAL.md Perfusion: high priority below 55 for >= 2 min (unverified)",
}


def toml_value(value: Any) -> str:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return value  # TOML's own special floats
    # strings, ints, floats and bools are written alike in JSON and TOML
    return json.dumps(value, ensure_ascii=False)


def rules_toml(*rules: dict[str, Any]) -> str:
    blocks = []
    for rule in rules:
        lines = ["[[rule]]", *(f"{key} = {toml_value(v)}" for key, v in rule.items())]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site-rules.toml"
    path.write_text(text, encoding="utf-8")
    return path


def make_rule(**fields: Any) -> ThresholdRule:
    return ThresholdRule.model_validate({**MAP_LOW, **fields})


# --- loading -----------------------------------------------------------------------------


def test_packaged_default_rules_load_and_cite_a_source() -> None:
    rules = load_rules()
    assert len(rules.rule) >= 1
    for rule in rules.rule:
        assert "CLINICAL.md" in rule.source, rule.id
    map_low = rules.get("perfusion.map_low")
    assert (map_low.direction, map_low.threshold, map_low.on_delay_s) == ("below", 65.0, 300.0)
    assert map_low.priority is AlertPriority.MEDIUM
    assert "unverified" in map_low.source  # CLINICAL.md marks these delays unverified


def test_a_valid_site_rules_file_loads(tmp_path: Path) -> None:
    rules = load_rules(write_rules(tmp_path, rules_toml(MAP_LOW, MAP_VERY_LOW)))
    assert [r.id for r in rules.rule] == ["perfusion.map_low", "perfusion.map_very_low"]
    very_low = rules.get("perfusion.map_very_low")
    assert very_low.priority is AlertPriority.HIGH
    assert (very_low.timing.on_delay_s, very_low.timing.off_delay_s) == (120.0, 120.0)
    with pytest.raises(KeyError):
        rules.get("perfusion.lactate_high")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            rules_toml(MAP_LOW, {**MAP_VERY_LOW, "feature": "lactate_mmol_l"}),
            "unknown feature 'lactate_mmol_l'",
            id="unknown-feature",
        ),
        pytest.param(
            rules_toml(MAP_LOW, {**MAP_VERY_LOW, "id": "perfusion.map_low"}),
            "duplicate rule ids: ['perfusion.map_low']",
            id="duplicate-id",
        ),
        pytest.param(
            rules_toml({**MAP_LOW, "on_delay_s": -30}),
            "on_delay_s\n  Input should be greater than or equal to 0",
            id="negative-on-delay",
        ),
        pytest.param(
            rules_toml({**MAP_LOW, "off_delay_s": -1}),
            "off_delay_s\n  Input should be greater than or equal to 0",
            id="negative-off-delay",
        ),
        pytest.param(
            rules_toml({k: v for k, v in MAP_LOW.items() if k != "source"}),
            "source\n  Field required",
            id="missing-source",
        ),
        pytest.param(
            rules_toml({**MAP_LOW, "thresold": 60.0}),
            "thresold\n  Extra inputs are not permitted",
            id="misspelt-key",
        ),
        pytest.param(
            rules_toml(MAP_LOW).replace("threshold = 65.0", "threshold = 65.0.0"),
            "is not valid TOML",
            id="malformed-toml",
        ),
        pytest.param(
            "[[rule]]\nid = 'perfusion.map_low'\ntitle = \"MAP low\n",
            "is not valid TOML",
            id="unterminated-string",
        ),
        pytest.param("# every rule commented out\n", "rule\n  Field required", id="no-rules"),
    ],
)
def test_an_invalid_rules_file_raises_rules_error_naming_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = write_rules(tmp_path, text)
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert problem in message
    assert str(path) in message  # the operator is told which file


def test_a_missing_rules_file_raises_rules_error(tmp_path: Path) -> None:
    path = tmp_path / "no-such-rules.toml"
    with pytest.raises(RulesError, match=r"cannot read rules file .*no-such-rules\.toml"):
        load_rules(path)


def test_a_rules_file_that_is_not_utf8_raises_rules_error(tmp_path: Path) -> None:
    """TOML is UTF-8; a Latin-1 file saved by an editor must stop the worker clearly."""
    path = tmp_path / "latin1-rules.toml"
    text = rules_toml({**MAP_LOW, "title": "PAM basse (< 65 mmHg), réanimation"})
    assert "é" in text
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(RulesError, match=r"latin1-rules\.toml"):
        load_rules(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("threshold", "nan"), ("hysteresis", "inf"), ("threshold", "-inf")],
)
def test_a_non_finite_number_in_a_rule_is_refused(tmp_path: Path, field: str, value: str) -> None:
    """``threshold = nan`` would make a rule that can never fire; ``hysteresis = inf`` one
    that never clears. TOML allows both literals, so validation must refuse them."""
    path = write_rules(tmp_path, rules_toml({**MAP_LOW, field: value}))
    with pytest.raises(RulesError, match=field):
        load_rules(path)


# --- raise and clear conditions --------------------------------------------------------


def test_below_rule_raises_strictly_below_its_threshold() -> None:
    rule = make_rule(direction="below", threshold=65.0)
    assert rule.onset(64.9) is True
    assert rule.onset(65.0) is False
    assert rule.onset(78.0) is False
    assert rule.comparator == "<"


def test_above_rule_raises_strictly_above_its_threshold() -> None:
    rule = make_rule(direction="above", threshold=110.0, hysteresis=5.0)
    assert rule.onset(110.1) is True
    assert rule.onset(110.0) is False
    assert rule.onset(64.0) is False
    assert rule.comparator == ">"


def test_below_rule_clears_only_past_its_hysteresis_band() -> None:
    rule = make_rule(direction="below", threshold=65.0, hysteresis=3.0)
    assert rule.onset(66.0) is False  # no longer alarming ...
    assert rule.resolved(66.0) is False  # ... but not yet resolved: inside the band
    assert rule.resolved(67.9) is False
    assert rule.resolved(68.0) is True
    assert rule.resolved(72.0) is True
    assert rule.resolved(60.0) is False


def test_above_rule_clears_only_past_its_hysteresis_band() -> None:
    rule = make_rule(direction="above", threshold=110.0, hysteresis=5.0)
    assert rule.resolved(108.0) is False
    assert rule.resolved(105.1) is False
    assert rule.resolved(105.0) is True
    assert rule.resolved(90.0) is True
    assert rule.resolved(115.0) is False


def test_without_hysteresis_clearing_starts_at_the_threshold() -> None:
    rule = make_rule(direction="below", threshold=65.0, hysteresis=0.0)
    assert rule.resolved(65.0) is True
    assert rule.resolved(64.9) is False


def test_an_unknown_value_neither_raises_nor_clears() -> None:
    rule = make_rule(hysteresis=3.0)
    assert rule.onset(None) is None
    assert rule.resolved(None) is None


def test_a_negative_hysteresis_is_refused() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        make_rule(hysteresis=-3.0)
