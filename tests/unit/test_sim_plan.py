"""Scenario plans: the default mix, --scenario specs, TOML files, the simulate command's options."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from services.sim import Scenario, default_plan, load_scenarios, parse_scenario
from services.sim.scenarios import plan_from_options


def test_a_scenario_spec_parses_with_units_and_options() -> None:
    s = parse_scenario("cerebral_desaturation:bed=4,onset=1h,duration=90s,severity=2,side=right")
    assert s == Scenario("cerebral_desaturation", 4, 3600.0, 90.0, severity=2.0, side="right")
    assert parse_scenario("device_disconnect:bed=2,device=nirs").duration_s == 300


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sepsis:bed=1", "unknown scenario 'sepsis'"),
        ("septic_shock:onset=5", "bed= is required"),
        ("septic_shock:bed=1,colour=red", "unknown scenario option"),
        ("septic_shock:bed=1,onset", "not key=value"),
        ("septic_shock:bed=1,onset=soon", "not a duration"),
        ("septic_shock:bed=1,severity=9", "severity must be in"),
        ("device_disconnect:bed=1,device=pump", "device must be"),
    ],
)
def test_bad_scenario_specs_are_refused_with_a_reason(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scenario(spec)


def test_scenarios_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(
        '[[scenario]]\nname = "septic_shock"\nbed = 2\nonset = "10m"\nduration = 7200\n\n'
        '[[scenario]]\nname = "crrt_filter_clotting"\nbed = 5\nseverity = 1.5\n'
    )
    assert load_scenarios(path) == (
        Scenario("septic_shock", 2, 600, 7200),
        Scenario("crrt_filter_clotting", 5, 0, 5400, severity=1.5),
    )


def test_the_default_plan_is_per_bed_and_keeps_the_demo_hypotension_on_bed_1() -> None:
    small, large = default_plan(7, 4, 6 * 3600), default_plan(7, 16, 6 * 3600)
    assert [s for s in large if s.bed <= 4] == list(small)
    assert [s for s in small if s.bed == 1 and not s.name.startswith("artefact")] == [
        Scenario("hypotension", 1, 120, 600)
    ]
    clinical = {s.name for s in large if not s.name.startswith("artefact")}
    assert clinical >= {
        "hypotension", "septic_shock", "venous_congestion_aki", "cerebral_desaturation",
        "crrt_filter_clotting", "device_disconnect",
    }  # fmt: skip
    assert any(s.name.startswith("artefact") for s in small)
    assert all(s.onset_s >= 20 * 60 for s in small if s.name.startswith("artefact"))
    longer = default_plan(7, 4, 12 * 3600)
    assert list(small) == [s for s in longer if s.onset_s < 6 * 3600]


def test_explicit_scenarios_replace_the_defaults_of_their_bed_only() -> None:
    plan = plan_from_options(
        beds=8, seed=7, duration_s=3600, specs=("septic_shock:bed=1,onset=60,duration=600",)
    )
    assert [s for s in plan if s.bed == 1] == [Scenario("septic_shock", 1, 60, 600)]
    assert any(s.bed == 2 for s in plan)
    only = plan_from_options(
        beds=8, seed=7, duration_s=3600, defaults=False, hypotension=(3, 90, 480),
        hypotension_explicit=True,
    )  # fmt: skip
    assert only == (Scenario("hypotension", 3, 90, 480),)
    moved = plan_from_options(beds=8, seed=7, duration_s=3600, hypotension=(0, 120, 600))
    assert not any(s.name == "hypotension" for s in moved)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "sepsis:bed=1"], "unknown scenario"),
        (["--beds", "4", "--scenario", "septic_shock:bed=9"], "bed 9 outside 1..4"),
    ],
)
def test_simulate_refuses_bad_scenarios_before_touching_kafka(
    args: list[str], message: str
) -> None:
    result = CliRunner().invoke(main, ["simulate", "--duration", "5", *args])
    assert result.exit_code == 2
    assert message in result.output
