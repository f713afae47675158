"""The scenario plan of the simulated ICU: which bed, what, from when, for how long, how badly.

A plan is a tuple of :class:`Scenario`. The default plan is a pure function of
``(seed, bed)`` (and the horizon it covers), so adding beds never changes the plan of
the existing ones. Bed 1 gets the scripted hypotension episode that ``vigil run``
relies on; the other beds cycle through the clinical scenarios, and every bed gets
artefacts on the devices it has (a Poisson process, about 1.5 per hour).

>>> s = parse_scenario("septic_shock:bed=3,onset=10m,duration=2h,severity=1.5")
>>> (s.name, s.bed, s.onset_s, s.duration_s, s.severity, s.end_s)
('septic_shock', 3, 600.0, 7200.0, 1.5, 7800.0)
>>> [s.name for s in default_plan(seed=7, beds=3, horizon_s=600) if s.bed == 1]
['hypotension']
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

Side = Literal["left", "right"]
Device = Literal["monitor", "nirs", "crrt"]

# Independent random streams of one bed: np.random.default_rng([seed, bed, stream]).
STREAM_PLAN, STREAM_ARTEFACT_PLAN, STREAM_EQUIPMENT = 1, 2, 3


@dataclass(frozen=True)
class ScenarioKind:
    """What a scenario is about: the organs it may affect and what it needs at the bed.

    The ground truth lists only the SOFA organs the simulated data reaches (see
    :func:`services.sim.physiology.organs_reached`); other organs are listed as is.
    """

    name: str
    organs: tuple[str, ...]
    description: str
    needs: frozenset[str]  # equipment: arterial_line, central_line, nirs, crrt
    default_duration_s: float


def _kind(name: str, organs: tuple[str, ...], description: str, needs: str, dur: float) -> Any:
    return name, ScenarioKind(name, organs, description, frozenset(needs.split()), dur)


SCENARIO_KINDS: Mapping[str, ScenarioKind] = MappingProxyType(
    dict(
        (
            _kind(
                "hypotension",
                ("cardiovascular",),
                "MAP ramps to 56 mmHg in 30 s, holds, recovers; compensatory tachycardia",
                "arterial_line",
                600,
            ),
            _kind(
                "septic_shock",
                ("cardiovascular", "respiratory", "renal", "coagulation", "liver", "cns"),
                "vasodilatory shock: MAP falls, HR, temperature and lactate rise, urine output"
                " falls; norepinephrine titrated",
                "arterial_line central_line",
                3 * 3600,
            ),
            _kind(
                "venous_congestion_aki",
                ("renal", "congestion"),
                "CVP rises, positive fluid balance, renal venous Doppler continuous -> biphasic"
                " -> monophasic, oliguria, creatinine rises (KDIGO)",
                "central_line",
                8 * 3600,
            ),
            _kind(
                "cerebral_desaturation",
                ("brain",),
                "rSO2 falls > 20% below baseline on one side, with left/right asymmetry",
                "nirs",
                20 * 60,
            ),
            _kind(
                "crrt_filter_clotting",
                ("crrt_circuit",),
                "pre-filter pressure, filter pressure drop and TMP rise; then the blood pump"
                " stops with a machine alarm until the circuit is changed",
                "crrt",
                90 * 60,
            ),
            _kind("device_disconnect", (), "a device stops sending (gap)", "", 5 * 60),
            _kind("artefact_ecg_lead_off", (), "ECG lead off: HR reads 0", "", 60),
            _kind("artefact_spo2_motion", (), "SpO2 motion artefact: erratic low SpO2", "", 45),
            _kind(
                "artefact_arterial_flush",
                (),
                "arterial line flush: ABP square wave near 300 mmHg",
                "arterial_line",
                20,
            ),
            _kind(
                "artefact_arterial_zeroing",
                (),
                "arterial line zeroing: transducer open to air, ABP reads 0",
                "arterial_line",
                30,
            ),
            _kind(
                "artefact_arterial_damping",
                (),
                "damped arterial line: pulse pressure shrinks, MAP slightly low",
                "arterial_line",
                10 * 60,
            ),
            _kind(
                "artefact_nirs_sensor_lift",
                (),
                "NIRS sensor lifted: the channel shows no rSO2 value until re-applied",
                "nirs",
                120,
            ),
        )
    )
)

CLINICAL_SCENARIOS = (
    "hypotension",
    "septic_shock",
    "venous_congestion_aki",
    "cerebral_desaturation",
    "crrt_filter_clotting",
)


@dataclass(frozen=True)
class Scenario:
    """One scripted condition of one bed (1-based), in seconds of event time from the start.

    ``severity`` scales the physiological effect (1 = the documented typical case);
    ``side`` is the affected hemisphere or sensor (NIRS scenarios); ``device`` the
    device that goes silent (``device_disconnect``).
    """

    name: str
    bed: int
    onset_s: float
    duration_s: float
    severity: float = 1.0
    side: Side = "left"
    device: Device = "monitor"

    def __post_init__(self) -> None:
        if self.name not in SCENARIO_KINDS:
            raise ValueError(f"unknown scenario {self.name!r}; known: {sorted(SCENARIO_KINDS)}")
        if self.bed < 1:
            raise ValueError(f"scenario bed {self.bed} must be >= 1")
        if self.onset_s < 0 or not self.duration_s > 0:
            raise ValueError("scenario onset must be >= 0 and duration > 0")
        if not 0 < self.severity <= 3:
            raise ValueError("scenario severity must be in (0, 3]")
        if self.side not in ("left", "right"):
            raise ValueError("scenario side must be left or right")
        if self.device not in ("monitor", "nirs", "crrt"):
            raise ValueError("scenario device must be monitor, nirs or crrt")

    @property
    def end_s(self) -> float:
        return self.onset_s + self.duration_s

    @property
    def kind(self) -> ScenarioKind:
        return SCENARIO_KINDS[self.name]

    def active(self, t_s: float) -> bool:
        return self.onset_s <= t_s < self.end_s

    def depth(self, t_s: float, ramp_s: float) -> float:
        """Trapezoid profile (0..1): ramps up from onset, holds, ramps down to the end.

        >>> s = Scenario("hypotension", 1, onset_s=100, duration_s=200)
        >>> [s.depth(t, 20) for t in (99, 100, 110, 120, 250, 290, 300)]
        [0.0, 0.0, 0.5, 1.0, 1.0, 0.5, 0.0]
        """
        rel = t_s - self.onset_s
        if rel <= 0 or rel >= self.duration_s:
            return 0.0
        return min(1.0, rel / ramp_s, (self.duration_s - rel) / ramp_s)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_seconds(text: str) -> float:
    """``600``, ``600s``, ``10m`` or ``1.5h`` in seconds.

    >>> parse_seconds("10m"), parse_seconds("1.5h"), parse_seconds("45")
    (600.0, 5400.0, 45.0)
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (seconds, or with s/m/h)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _from_mapping(name: str, values: Mapping[str, Any]) -> Scenario:
    allowed = {"bed", "onset", "duration", "severity", "side", "device"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"unknown scenario option(s) {sorted(unknown)}; allowed {sorted(allowed)}")
    if "bed" not in values:
        raise ValueError(f"scenario {name}: bed= is required")
    if name not in SCENARIO_KINDS:
        raise ValueError(f"unknown scenario {name!r}; known: {sorted(SCENARIO_KINDS)}")
    onset = values.get("onset", 0)
    duration = values.get("duration", SCENARIO_KINDS[name].default_duration_s)
    return Scenario(
        name=name,
        bed=int(values["bed"]),
        onset_s=parse_seconds(str(onset)),
        duration_s=parse_seconds(str(duration)),
        severity=float(values.get("severity", 1.0)),
        side=values.get("side", "left"),
        device=values.get("device", "monitor"),
    )


def parse_scenario(text: str) -> Scenario:
    """``NAME:bed=3,onset=600,duration=3600[,severity=1.5][,side=right][,device=nirs]``."""
    name, _, options = text.strip().partition(":")
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value.strip():
            raise ValueError(f"scenario option {item!r} is not key=value")
        values[key.strip()] = value.strip()
    return _from_mapping(name.strip(), values)


def load_scenarios(path: Path) -> tuple[Scenario, ...]:
    """Scenarios from a TOML file: one ``[[scenario]]`` table per scenario.

    Each table has ``name`` and ``bed`` and optionally ``onset``, ``duration`` (seconds,
    or strings like ``"10m"``), ``severity``, ``side``, ``device``.
    """
    with path.open("rb") as f:
        document = tomllib.load(f)
    tables = document.get("scenario", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{path}: expected [[scenario]] tables")
    plan = []
    for table in tables:
        values = dict(table)
        name = values.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"{path}: every [[scenario]] needs a name")
        plan.append(_from_mapping(name, values))
    return tuple(plan)


# --- equipment ------------------------------------------------------------------------


@dataclass(frozen=True)
class Equipment:
    """Devices at one bed: a random ICU mix, plus whatever the bed's scenarios need."""

    arterial_line: bool
    central_line: bool
    nirs: bool
    crrt: bool

    def has(self, item: str) -> bool:
        return bool(getattr(self, item))


# Scenarios whose course assumes native kidneys (creatinine rising, oliguria, diuretics):
# a bed with one of them gets CRRT only if the plan needs it (e.g. a CRRT scenario too).
NATIVE_KIDNEY_SCENARIOS = frozenset({"venous_congestion_aki", "septic_shock"})


def equipment_of(seed: int, bed: int, plan: Sequence[Scenario]) -> Equipment:
    """Arterial line 80 %, central line 70 %, NIRS 30 %, CRRT 15 % of beds, or as needed.

    No random CRRT on a bed with a :data:`NATIVE_KIDNEY_SCENARIOS` scenario: KDIGO AKI
    staging by creatinine and urine output (CLINICAL.md Renal) describes kidneys that
    are not dialysed.
    """
    rng = np.random.default_rng([seed, bed, STREAM_EQUIPMENT])
    draws = rng.random(4)
    needs: set[str] = set()
    native_kidneys = False
    for scenario in plan:
        if scenario.bed == bed:
            needs |= scenario.kind.needs
            native_kidneys |= scenario.name in NATIVE_KIDNEY_SCENARIOS
            if scenario.name == "device_disconnect" and scenario.device != "monitor":
                needs.add(scenario.device)
    return Equipment(
        arterial_line=bool(draws[0] < 0.8) or "arterial_line" in needs,
        central_line=bool(draws[1] < 0.7) or bool(needs & {"central_line", "crrt"}),
        nirs=bool(draws[2] < 0.3) or "nirs" in needs,
        crrt=bool(draws[3] < 0.15 and not native_kidneys) or "crrt" in needs,
    )


# --- the default plan -------------------------------------------------------------------

# Bed b gets _DEFAULT_CYCLE[(b - 1) % 8]; bed 1's slot is the hypotension episode.
_DEFAULT_CYCLE: tuple[str | None, ...] = (
    None,
    "septic_shock",
    "venous_congestion_aki",
    "cerebral_desaturation",
    "crrt_filter_clotting",
    None,
    "device_disconnect",
    None,
)
# onset range (s) and duration range (s) of each default clinical scenario
_DEFAULT_TIMING: Mapping[str, tuple[tuple[float, float], tuple[float, float]]] = MappingProxyType(
    {
        "septic_shock": ((10 * 60, 30 * 60), (2 * 3600, 4 * 3600)),
        "venous_congestion_aki": ((15 * 60, 45 * 60), (6 * 3600, 10 * 3600)),
        "cerebral_desaturation": ((10 * 60, 40 * 60), (10 * 60, 30 * 60)),
        "crrt_filter_clotting": ((10 * 60, 30 * 60), (60 * 60, 120 * 60)),
        "device_disconnect": ((20 * 60, 60 * 60), (2 * 60, 10 * 60)),
    }
)
# artefact kind -> (equipment it needs or None for the monitor, duration range s, weight)
_ARTEFACTS: Mapping[str, tuple[str | None, tuple[float, float], float]] = MappingProxyType(
    {
        "artefact_ecg_lead_off": (None, (20, 120), 2.0),
        "artefact_spo2_motion": (None, (20, 90), 3.0),
        "artefact_arterial_flush": ("arterial_line", (10, 30), 2.0),
        "artefact_arterial_zeroing": ("arterial_line", (15, 40), 0.5),
        "artefact_arterial_damping": ("arterial_line", (5 * 60, 20 * 60), 0.5),
        "artefact_nirs_sensor_lift": ("nirs", (30, 300), 1.0),
    }
)
ARTEFACTS_PER_HOUR = 1.5
ARTEFACTS_FROM_S = 20 * 60  # patients settle first (and bed 1's demo alert comes clean)
DEFAULT_HORIZON_S = 24 * 3600


def default_plan(
    seed: int,
    beds: int,
    horizon_s: float = DEFAULT_HORIZON_S,
    *,
    hypotension_bed: int = 1,
    hypotension_onset_s: float = 120.0,
    hypotension_duration_s: float = 600.0,
) -> tuple[Scenario, ...]:
    """The default mix for ``beds`` beds over the first ``horizon_s`` seconds.

    Each bed's part depends only on ``(seed, bed)`` and the horizon (artefacts are drawn
    in time order, so a longer horizon only appends).
    """
    plan: list[Scenario] = []
    for bed in range(1, beds + 1):
        rng = np.random.default_rng([seed, bed, STREAM_PLAN])
        clinical: list[Scenario] = []
        if bed == hypotension_bed:
            clinical.append(
                Scenario("hypotension", bed, hypotension_onset_s, hypotension_duration_s)
            )
        else:
            name = _DEFAULT_CYCLE[(bed - 1) % len(_DEFAULT_CYCLE)]
            if name is not None:
                (on_lo, on_hi), (du_lo, du_hi) = _DEFAULT_TIMING[name]
                onset, duration = rng.uniform(on_lo, on_hi), rng.uniform(du_lo, du_hi)
                clinical.append(Scenario(name, bed, round(onset), round(duration)))
        equipment = equipment_of(seed, bed, clinical)
        plan += [s for s in clinical if s.onset_s < horizon_s]
        plan += _default_artefacts(seed, bed, equipment, horizon_s)
    return tuple(plan)


def _default_artefacts(
    seed: int, bed: int, equipment: Equipment, horizon_s: float
) -> list[Scenario]:
    rng = np.random.default_rng([seed, bed, STREAM_ARTEFACT_PLAN])
    names = list(_ARTEFACTS)
    weights = np.array(
        [
            w if needs is None or equipment.has(needs) else 0.0
            for needs, _durations, w in _ARTEFACTS.values()
        ]
    )
    weights /= weights.sum()
    found: list[Scenario] = []
    t = float(ARTEFACTS_FROM_S)
    while True:
        t += float(rng.exponential(3600 / ARTEFACTS_PER_HOUR))
        pick = int(rng.choice(len(names), p=weights))
        low, high = _ARTEFACTS[names[pick]][1]
        duration = round(float(rng.uniform(low, high)))
        side: Side = "left" if rng.random() < 0.5 else "right"
        if t >= horizon_s:
            return found
        found.append(Scenario(names[pick], bed, round(t), duration, side=side))


def merge_plans(defaults: Sequence[Scenario], explicit: Sequence[Scenario]) -> tuple[Scenario, ...]:
    """Explicit scenarios replace every default scenario of the beds they name."""
    named = {s.bed for s in explicit}
    return tuple([s for s in defaults if s.bed not in named] + list(explicit))


def plan_from_options(
    *,
    beds: int,
    seed: int,
    duration_s: int | None,
    specs: tuple[str, ...] = (),
    scenarios_file: Path | None = None,
    defaults: bool = True,
    hypotension: tuple[int, float, float] = (1, 120.0, 600.0),
    hypotension_explicit: bool = False,
) -> tuple[Scenario, ...]:
    """The scenario plan of ``vigil simulate``'s options (ValueError on a bad spec).

    The default mix (unless ``defaults`` is off) gives bed ``hypotension[0]`` the
    hypotension episode; explicit scenarios (``--scenario``, ``--scenarios``, and the
    ``--hypotension-*`` options when given) replace the defaults of the beds they name.
    """
    hypo_bed, hypo_onset, hypo_duration = hypotension
    explicit: list[Scenario] = [parse_scenario(spec) for spec in specs]
    if scenarios_file is not None:
        explicit += load_scenarios(scenarios_file)
    if hypotension_explicit and hypo_bed:
        explicit.append(Scenario("hypotension", hypo_bed, hypo_onset, hypo_duration))
    if not defaults:
        return tuple(explicit)
    base = default_plan(
        seed,
        beds,
        duration_s if duration_s is not None else DEFAULT_HORIZON_S,
        hypotension_bed=0 if hypotension_explicit else hypo_bed,
        hypotension_onset_s=hypo_onset,
        hypotension_duration_s=hypo_duration,
    )
    return merge_plans(base, explicit)
