"""The rules file (streams/rules.py): validation at start, Kleene logic and hysteresis."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from schemas.alerts import AlertPriority
from streams.features.catalog import FEATURES
from streams.rules import (
    AllOf,
    AnyOf,
    Clause,
    KnownClause,
    Rule,
    RulesError,
    RuleSet,
    kleene_all,
    kleene_any,
    load_rules,
    parse_rules,
    resolved,
)

MAP_LOW: dict[str, Any] = {
    "id": "perfusion.map_low",
    "version": 1,
    "title": "MAP below 65 mmHg",
    "kind": "physiological",
    "priority": "medium",
    "condition": {"feature": "map_median_1min_mmhg", "op": "<", "value": 65.0, "hysteresis": 2.0},
    "on_delay_s": 300,
    "off_delay_s": 120,
    "source": "CLINICAL.md Perfusion: MAP < 65 mmHg (Sepsis-3); delays unverified",
}
LACTATE: dict[str, Any] = {
    **MAP_LOW,
    "id": "perfusion.lactate_high",
    "title": "Lactate above 2 mmol/L",
    "condition": {"feature": "lactate_mmol_l", "op": ">", "value": 2.0},
    "on_delay_s": 0,
    "off_delay_s": 0,
    "escalation": {
        "priority": "high",
        "condition": {"feature": "lactate_mmol_l", "op": ">=", "value": 4.0},
    },
    "source": "CLINICAL.md Perfusion: lactate > 2 mmol/L, >= 4 severe",
}


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return value  # TOML's own special floats
    return json.dumps(value, ensure_ascii=False)  # strings, numbers, bools alike in JSON


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


def make_rule(**fields: Any) -> Rule:
    return Rule.model_validate({**MAP_LOW, **fields})


def clause(feature: str, op: str, value: float | str, hysteresis: float = 0.0) -> dict[str, Any]:
    return {"feature": feature, "op": op, "value": value, "hysteresis": hysteresis}


# --- the packaged default rules --------------------------------------------------------


def test_packaged_default_rules_load_and_every_feature_is_in_the_catalogue() -> None:
    rules = load_rules()
    assert len(rules.rule) >= 25
    for rule in rules.rule:
        assert rule.enabled, rule.id
        for name in rule.feature_names:
            assert name in FEATURES, (rule.id, name)
        assert "CLINICAL.md" in rule.source, rule.id


def test_default_thresholds_are_those_of_clinical_md() -> None:
    rules = load_rules()
    map_low = rules.get("perfusion.map_low")
    assert (map_low.on_delay_s, map_low.priority) == (300.0, AlertPriority.MEDIUM)
    assert map_low.thresholds == {
        "map_median_1min_mmhg": 65.0,
        "escalation:map_median_1min_mmhg": 55.0,
    }
    assert map_low.escalation is not None
    assert (map_low.escalation.priority, map_low.escalation.on_delay_s) == (AlertPriority.HIGH, 120)
    assert rules.get("perfusion.lactate_high").thresholds == {
        "lactate_mmol_l": 2.0,
        "escalation:lactate_mmol_l": 4.0,
    }
    assert rules.get("brain.rso2_drop_from_baseline").on_delay_s == 15
    assert rules.get("crrt.tmp_high").thresholds == {"crrt_tmp_mmhg": 260.0}
    assert rules.get("crrt.effluent_dose_low").thresholds == {"crrt_effluent_dose_ml_kg_h": 20.0}
    assert rules.get("crrt.net_uf_high").thresholds == {"crrt_net_uf_ml_kg_h": 1.75}
    assert rules.get("technical.arterial_line_no_data").thresholds == {
        "arterial_line_data_age_s": 120.0,
        "vitals_interval_s": 30.0,  # a streaming monitor, not hourly charting
    }
    assert rules.get("technical.crrt_no_data").kind == "technical"


@pytest.mark.parametrize(
    "rule_id",
    [
        "perfusion.map_low",  # delays unverified
        "perfusion.shock_index_high",
        "congestion.cvp_high_congested",  # composite unverified
        "brain.rso2_asymmetry",
        "crrt.filter_clotting_trend",  # slope invented here
    ],
)
def test_rules_clinical_md_marks_unverified_say_so(rule_id: str) -> None:
    assert "unverified" in load_rules().get(rule_id).source


def test_brain_drop_clears_back_at_80_percent_of_baseline() -> None:
    rule = load_rules().get("brain.rso2_drop_from_baseline")
    assert rule.onset({"rso2_drop_from_baseline_pct": 21.0}) is True
    assert rule.resolved({"rso2_drop_from_baseline_pct": 20.5}) is False
    assert rule.resolved({"rso2_drop_from_baseline_pct": 20.0}) is True


def test_cuff_rule_fires_only_without_a_recent_arterial_line() -> None:
    rule = load_rules().get("perfusion.map_low_cuff")
    assert rule.onset({"nbp_map_low_count": 2.0}) is True  # no arterial line at all
    assert rule.onset({"nbp_map_low_count": 2.0, "arterial_line_data_age_s": 900.0}) is True
    assert rule.onset({"nbp_map_low_count": 3.0, "arterial_line_data_age_s": 4.0}) is False
    assert rule.onset({"nbp_map_low_count": 1.0}) is False


def test_default_reannounce_intervals_follow_priority() -> None:
    rules = load_rules()
    rule = rules.get("perfusion.map_low")
    assert rules.reannounce_s(rule, AlertPriority.MEDIUM) == 1800
    assert rules.reannounce_s(rule, AlertPriority.HIGH) == 300
    assert rules.reannounce_s(rule, AlertPriority.LOW) == 0


# --- loading site files ----------------------------------------------------------------


def test_a_valid_site_rules_file_loads(tmp_path: Path) -> None:
    rules = load_rules(write_rules(tmp_path, rules_toml(MAP_LOW, LACTATE)))
    assert [r.id for r in rules.rule] == ["perfusion.map_low", "perfusion.lactate_high"]
    with pytest.raises(KeyError):
        rules.get("perfusion.shock_index_high")


def test_nested_conditions_and_defaults_table_load(tmp_path: Path) -> None:
    text = """
[defaults.reannounce_s]
high = 60
medium = 300

[[rule]]
id = "congestion.cvp_high_congested"
version = 2
title = "CVP high with congestion"
kind = "physiological"
priority = "low"
on_delay_s = 1800
off_delay_s = 600
reannounce_s = 0
latching = true
explain = ["rvd_grade"]
source = "CLINICAL.md Renal and venous congestion (composite unverified)"

[rule.condition]
all = [
  { feature = "cvp_median_5min_mmhg", op = ">=", value = 12.0, hysteresis = 1.0 },
  { any = [
    { feature = "fluid_balance_24h_ml", op = ">", value = 2000.0 },
    { feature = "rvd_discontinuous", op = "==", value = 1 },
  ] },
]
"""
    rules = load_rules(write_rules(tmp_path, text))
    rule = rules.get("congestion.cvp_high_congested")
    assert isinstance(rule.condition, AllOf)
    assert isinstance(rule.condition.all[1], AnyOf)
    assert rule.latching
    assert rule.version == 2
    assert rules.reannounce_s(rule, AlertPriority.LOW) == 0  # the rule's own value wins
    assert rules.defaults.reannounce_s.high == 60
    assert rules.defaults.reannounce_s.low == 0  # not given: the built-in default
    assert rule.feature_names == (
        "cvp_median_5min_mmhg",
        "fluid_balance_24h_ml",
        "rvd_discontinuous",
        "rvd_grade",
    )


def test_a_disabled_rule_loads_but_is_not_enabled(tmp_path: Path) -> None:
    rules = load_rules(write_rules(tmp_path, rules_toml(MAP_LOW, {**LACTATE, "enabled": False})))
    assert [r.id for r in rules.enabled] == ["perfusion.map_low"]
    assert rules.get("perfusion.lactate_high").enabled is False


def _problem(text: str, tmp_path: Path) -> str:
    path = write_rules(tmp_path, text)
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert str(path) in message  # the operator is told which file
    return message


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        pytest.param(
            {**LACTATE, "condition": clause("lactate_mmol", ">", 2)},
            "rule 'perfusion.lactate_high': condition.feature: Value error, unknown feature"
            " 'lactate_mmol'; did you mean 'lactate_mmol_l'",
            id="unknown-feature-with-suggestion",
        ),
        pytest.param(
            {**LACTATE, "explain": ["lactate_clearance"]},
            "rule 'perfusion.lactate_high': explain: Value error, unknown feature"
            " 'lactate_clearance'; did you mean 'lactate_clearance_pct'",
            id="unknown-explain-feature",
        ),
        pytest.param(
            {**LACTATE, "condition": {"all": [clause("lactate_mmol_l", "=>", 2)]}},
            "rule 'perfusion.lactate_high': condition.all[0].op: Input should be '<'",
            id="bad-op",
        ),
        pytest.param(
            {**LACTATE, "condition": clause("rvd_discontinuous", "==", 1, hysteresis=0.5)},
            "hysteresis needs an ordered op",
            id="hysteresis-on-equality",
        ),
        pytest.param(
            {**LACTATE, "escalation": {"priority": "medium", "after_s": 600}},
            "rule 'perfusion.lactate_high': Value error, escalation.priority 'medium' must be"
            " higher than priority 'medium'",
            id="escalation-not-higher",
        ),
        pytest.param(
            {**LACTATE, "escalation": {"priority": "high"}},
            "escalation needs after_s and/or condition",
            id="escalation-without-trigger",
        ),
        pytest.param(
            {k: v for k, v in LACTATE.items() if k != "source"},
            "rule 'perfusion.lactate_high': source: Field required",
            id="missing-source",
        ),
        pytest.param(
            {**LACTATE, "source": "my colleague said so"},
            "rule 'perfusion.lactate_high': source: Value error, must name CLINICAL.md",
            id="uncited-source",
        ),
        pytest.param(
            {**LACTATE, "on_delay_s": -30},
            "rule 'perfusion.lactate_high': on_delay_s: Input should be greater than or equal to 0",
            id="negative-on-delay",
        ),
        pytest.param(
            {**LACTATE, "thresold": 60.0},
            "rule 'perfusion.lactate_high': thresold: Extra inputs are not permitted",
            id="misspelt-key",
        ),
        pytest.param(
            {**LACTATE, "condition": {"all": []}},
            "condition.all: Tuple should have at least 1 item",
            id="empty-all",
        ),
        pytest.param(
            {**LACTATE, "kind": "clinical"},
            "rule 'perfusion.lactate_high': kind: Input should be 'physiological' or 'technical'",
            id="bad-kind",
        ),
        pytest.param(
            {**LACTATE, "condition": clause("lactate_mmol_l", ">", "nan")},
            "condition.value: Input should be a finite number",
            id="nan-threshold",
        ),
    ],
)
def test_an_invalid_rule_raises_rules_error_naming_rule_and_field(
    tmp_path: Path, rule: dict[str, Any], problem: str
) -> None:
    message = _problem(rules_toml(MAP_LOW, rule), tmp_path)
    assert problem in message


def test_duplicate_rule_ids_are_refused(tmp_path: Path) -> None:
    message = _problem(rules_toml(MAP_LOW, {**LACTATE, "id": "perfusion.map_low"}), tmp_path)
    assert "duplicate rule ids: ['perfusion.map_low']" in message


def test_a_rule_without_an_id_is_named_by_its_position(tmp_path: Path) -> None:
    message = _problem(
        rules_toml(MAP_LOW, {k: v for k, v in LACTATE.items() if k != "id"}), tmp_path
    )
    assert "rule #2: id: Field required" in message


def test_items_that_failed_are_not_also_reported_as_missing(tmp_path: Path) -> None:
    message = _problem(
        rules_toml({**LACTATE, "condition": {"any": [clause("x_unknown", "<", 1)]}}), tmp_path
    )
    assert "unknown feature 'x_unknown'" in message
    assert "at least 1 item" not in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            rules_toml(LACTATE).replace("version = 1", "version = 1.0.0"),
            "is not valid TOML",
            id="malformed-toml",
        ),
        pytest.param("# every rule commented out\n", "rule: Field required", id="no-rules"),
        pytest.param(
            "[defaults.reannounce_s]\nhigh = -1\n\n" + rules_toml(LACTATE),
            "defaults.reannounce_s.high: Input should be greater than or equal to 0",
            id="bad-default",
        ),
    ],
)
def test_an_invalid_file_raises_rules_error(tmp_path: Path, text: str, problem: str) -> None:
    assert problem in _problem(text, tmp_path)


def test_a_missing_rules_file_raises_rules_error(tmp_path: Path) -> None:
    path = tmp_path / "no-such-rules.toml"
    with pytest.raises(RulesError, match=r"cannot read rules file .*no-such-rules\.toml"):
        load_rules(path)


def test_a_rules_file_that_is_not_utf8_raises_rules_error(tmp_path: Path) -> None:
    """TOML is UTF-8; a Latin-1 file saved by an editor must stop the worker clearly."""
    path = tmp_path / "latin1-rules.toml"
    text = rules_toml({**MAP_LOW, "title": "PAM basse (< 65 mmHg), réanimation"})
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(RulesError, match=r"latin1-rules\.toml"):
        load_rules(path)


def test_parse_rules_names_its_origin() -> None:
    with pytest.raises(RulesError, match=re.escape("rules file <inline> is invalid")):
        parse_rules(rules_toml({**MAP_LOW, "version": 0}), "<inline>")


# --- Kleene logic and hysteresis --------------------------------------------------------


def test_kleene_and_or_follow_sql_null_logic() -> None:
    t, f, u = True, False, None
    assert [kleene_all([a, b]) for a, b in [(t, t), (t, u), (u, u), (f, u), (u, f)]] == [
        t,
        u,
        u,
        f,
        f,
    ]
    assert [kleene_any([a, b]) for a, b in [(f, f), (f, u), (u, u), (t, u), (u, t)]] == [
        f,
        u,
        u,
        t,
        t,
    ]


@pytest.mark.parametrize(
    ("op", "x", "expected"),
    [
        ("<", 64.9, True),
        ("<", 65.0, False),
        ("<=", 65.0, True),
        (">", 65.0, False),
        (">", 65.1, True),
        (">=", 65.0, True),
        ("==", 65.0, True),
        ("!=", 65.0, False),
        ("!=", 1.0, True),
    ],
)
def test_clause_ops(op: str, x: float, expected: bool) -> None:
    c = Clause.model_validate(clause("map_median_1min_mmhg", op, 65.0))
    assert c.holds({"map_median_1min_mmhg": x}) is expected


def test_a_clause_on_an_unknown_feature_is_unknown() -> None:
    c = Clause.model_validate(clause("map_median_1min_mmhg", "<", 65.0, 2.0))
    assert c.holds({}) is None
    assert c.holds({"map_median_1min_mmhg": None}) is None
    assert resolved(c, {"map_median_1min_mmhg": None}) is None


def test_known_clause_is_true_iff_the_feature_is_unknown() -> None:
    missing = KnownClause(feature="arterial_line_data_age_s", known=False)
    present = KnownClause(feature="arterial_line_data_age_s", known=True)
    assert missing.holds({}) is True
    assert missing.holds({"arterial_line_data_age_s": 3.0}) is False
    assert present.holds({"arterial_line_data_age_s": 3.0}) is True


def test_below_rule_clears_only_past_its_hysteresis_band() -> None:
    rule = make_rule()  # < 65, hysteresis 2

    def at(x: float) -> dict[str, float | None]:
        return {"map_median_1min_mmhg": x}

    assert rule.onset(at(64.9)) is True
    assert rule.onset(at(66.0)) is False  # no longer alarming ...
    assert rule.resolved(at(66.0)) is False  # ... but not resolved: inside the band
    assert rule.resolved(at(66.99)) is False
    assert rule.resolved(at(67.0)) is True
    assert rule.resolved(at(60.0)) is False


def test_above_rule_clears_only_past_its_hysteresis_band() -> None:
    rule = make_rule(condition=clause("crrt_tmp_mmhg", ">=", 260.0, 20.0))
    assert rule.onset({"crrt_tmp_mmhg": 260.0}) is True
    assert rule.resolved({"crrt_tmp_mmhg": 250.0}) is False
    assert rule.resolved({"crrt_tmp_mmhg": 240.0}) is False  # >= 240 still counts
    assert rule.resolved({"crrt_tmp_mmhg": 239.9}) is True


def test_composite_resolution_is_kleene_not_of_the_shifted_condition() -> None:
    rule = make_rule(
        condition={
            "all": [
                clause("cvp_median_5min_mmhg", ">=", 12.0, 1.0),
                {
                    "any": [
                        clause("fluid_balance_24h_ml", ">", 2000.0, 200.0),
                        clause("rvd_discontinuous", "==", 1),
                    ]
                },
            ]
        }
    )
    assert rule.onset({"cvp_median_5min_mmhg": 13.0, "fluid_balance_24h_ml": 1000.0}) is None
    congested = {"cvp_median_5min_mmhg": 13.0, "fluid_balance_24h_ml": 2500.0}
    assert rule.onset(congested) is True  # RVD unknown, but the balance alone suffices
    congested["rvd_discontinuous"] = 0.0
    assert rule.onset(congested) is True
    # CVP 11.5 is no longer >= 12 but still inside the band (>= 11): not resolved
    assert rule.resolved({**congested, "cvp_median_5min_mmhg": 11.5}) is False
    assert rule.resolved({**congested, "cvp_median_5min_mmhg": 10.9}) is True
    # balance down to 1900 is inside its band (> 1800): not resolved
    assert rule.resolved({**congested, "fluid_balance_24h_ml": 1900.0}) is False
    assert rule.resolved({**congested, "fluid_balance_24h_ml": 1800.0}) is True
    # CVP unknown but the other branch false -> resolved (all is false whatever CVP is)
    assert rule.resolved({"fluid_balance_24h_ml": 0.0, "rvd_discontinuous": 0.0}) is True
    assert rule.resolved({"fluid_balance_24h_ml": 0.0}) is None  # RVD unknown


def test_trace_shows_each_clause_value_threshold_and_truth() -> None:
    rule = make_rule(
        condition={
            "all": [
                clause("cvp_median_5min_mmhg", ">=", 12.0, 1.0),
                {
                    "any": [
                        clause("fluid_balance_24h_ml", ">", 2000.0),
                        {"feature": "rvd_grade", "known": False},
                    ]
                },
            ]
        }
    )
    features = {"cvp_median_5min_mmhg": 13.5, "fluid_balance_24h_ml": 1200.0}
    assert rule.condition.trace(features) == [
        "all of -> true",
        "  cvp_median_5min_mmhg 13.5 >= 12 -> true",
        "  any of -> true",
        "    fluid_balance_24h_ml 1200 > 2000 -> false",
        "    rvd_grade unknown is unknown -> true",
    ]
    assert rule.condition.trace(features, cleared=True)[1] == (
        "  cvp_median_5min_mmhg 13.5 >= 11 (12 - hysteresis 1) -> true"
    )


def test_ruleset_needs_at_least_one_rule() -> None:
    with pytest.raises(ValueError, match="at least 1 item"):
        RuleSet.model_validate({"rule": []})
