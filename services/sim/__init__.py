"""A simulated ICU: physiology, clinical scenarios, artefacts, devices and ground truth.

- :mod:`services.sim.scenarios`: the scenario plan (default mix, ``--scenario`` specs, TOML);
- :mod:`services.sim.physiology`: baselines and what each scenario does, with sources;
- :mod:`services.sim.bed`: the devices of a bed and the records they send;
- :mod:`services.sim.engine`: the run (:func:`simulate_icu`) and its ground truth.

The publishing shell is :mod:`services.sim_publisher`.
"""

from services.sim.bed import bed_label, patient_id_of
from services.sim.engine import (
    Clock,
    IcuConfig,
    ground_truth,
    simulate_icu,
    wall_clock,
    write_ground_truth,
)
from services.sim.scenarios import (
    SCENARIO_KINDS,
    Scenario,
    default_plan,
    load_scenarios,
    merge_plans,
    parse_scenario,
)

__all__ = [
    "SCENARIO_KINDS",
    "Clock",
    "IcuConfig",
    "Scenario",
    "bed_label",
    "default_plan",
    "ground_truth",
    "load_scenarios",
    "merge_plans",
    "parse_scenario",
    "patient_id_of",
    "simulate_icu",
    "wall_clock",
    "write_ground_truth",
]
