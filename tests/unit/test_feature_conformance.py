"""Every feature group in ``streams.patient._GROUP_TYPES`` against the FeatureGroup protocol.

One realistic input stream drives every group: :func:`simulate_icu` of four beds over
2 h (septic shock, venous congestion with AKI, cerebral desaturation, CRRT filter
clotting, each with an artefact) and of one bed carrying all four scenarios, so every
device, for 7 h. Inputs reach a group the way ``PatientState`` routes them: each
non-artefact numeric measurement to the groups whose ``quantities`` contain it (late
samples of a frequent quantity dropped), every context event to ``observe_context``.
A few inputs the simulator never sends (NSE, CVP mean, pulse rate, capillary refill,
furosemide, drips in mg/h and U/min, charted output, the other labs, labs and charting
arriving out of order) are added so that every quantity a group reads is exercised. Features are
asked for once a minute of event time, with the facts ``PatientState`` would pass.

Properties, per group: outputs exactly the catalogue features of its organs (the
groups plus ``PatientState``'s own scores and technical features cover the catalogue
once); every value is None or a finite number, in range for its unit; pickle and
JSON state round trips mid-stream give identical later features; two fresh instances
agree exactly, and asking more often does not change the answers; fed nothing, every
feature is unknown (None) but for documented defaults; random missing input never
raises nor gives NaN; the JSON state does not grow with time (2 h vs 6 h).
"""

from __future__ import annotations

import bisect
import json
import math
import pickle
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest

from schemas.codes import QUANTITIES, Quantity
from schemas.common import SourceInfo
from schemas.context import (
    CapillaryRefill,
    ContextEvent,
    Drug,
    DrugDose,
    FluidBalanceEntry,
    Infusion,
    PatientContext,
    Weight,
)
from schemas.observations import ObservationMessage
from services.sim.engine import IcuConfig, simulate_icu
from services.sim.scenarios import parse_scenario
from streams.features.base import FeatureGroup, Features, PatientFacts
from streams.features.catalog import FEATURES
from streams.patient import _GROUP_TYPES, FREQUENT_SOURCES

START = datetime(2025, 2, 1, 8, 0, tzinfo=UTC)
T0 = START.timestamp()
HOUR = 3600
EVERY_S = 60
"""Features are asked for once a minute of event time (the rules ask every record)."""

WARD_PLAN = (
    "septic_shock:bed=1,onset=10m,duration=3h",
    "artefact_spo2_motion:bed=1,onset=50m,duration=60s",
    "artefact_arterial_flush:bed=1,onset=70m,duration=20s",
    "venous_congestion_aki:bed=2,onset=10m,duration=8h",
    "artefact_arterial_damping:bed=2,onset=40m,duration=10m",
    "cerebral_desaturation:bed=3,onset=30m,duration=20m,side=right",
    "artefact_nirs_sensor_lift:bed=3,onset=80m,duration=120s",
    "crrt_filter_clotting:bed=4,onset=20m,duration=90m",
    "artefact_ecg_lead_off:bed=4,onset=60m,duration=60s",
)
WARD = IcuConfig(
    beds=4,
    seed=1,  # bed 4 (CRRT) has no arterial line: its cuff pressures are exercised too
    start=START,
    duration_s=2 * HOUR,
    scenarios=tuple(parse_scenario(s) for s in WARD_PLAN),
)
EVERYTHING = IcuConfig(
    beds=1,
    seed=1,
    start=START,
    duration_s=7 * HOUR,  # the 6-h urine output needs 6 charted hours
    scenarios=tuple(
        parse_scenario(s)
        for s in (
            "septic_shock:bed=1,onset=10m,duration=3h",
            "venous_congestion_aki:bed=1,onset=10m,duration=8h",
            "cerebral_desaturation:bed=1,onset=30m,duration=20m",
            "crrt_filter_clotting:bed=1,onset=20m,duration=90m",
        )
    ),
)

GROUP_ORGANS: dict[str, frozenset[str]] = {
    "perfusion": frozenset({"perfusion"}),
    "renal": frozenset({"renal"}),
    "congestion": frozenset({"congestion"}),
    "brain": frozenset({"brain"}),
    "crrt": frozenset({"crrt"}),
    "organs": frozenset({"respiratory", "coagulation", "liver", "cns", "cardiovascular"}),
    "labs": frozenset({"labs"}),
}
"""The catalogue organs each group owns."""
PATIENT_STATE_ORGANS = frozenset({"scores", "technical", "risk"})
"""Organs ``PatientState`` computes itself (no group outputs them)."""

DOCUMENTED_DEFAULTS: dict[str, float] = {
    # OrganFeatures: "0 when never charted: no drip charted = none running"
    "norepinephrine_ug_kg_min": 0.0,
    "epinephrine_ug_kg_min": 0.0,
    "dopamine_ug_kg_min": 0.0,
    "dobutamine_ug_kg_min": 0.0,
    "vasopressor_on": 0.0,
}
"""Features known without any input, by a documented decision; every other is None."""
NEED_MORE_THAN_7H = frozenset(
    {
        "urine_output_12h_ml_kg_h",
        "urine_output_24h_ml_kg_h",
        "urine_output_24h_ml",
        "crrt_liberation_signal",  # 24 h of charted urine
    }
)
"""Features the 7-h stream cannot make known (12 or 24 charted hours of urine)."""

PCT = (0.0, 100.0)
FLAG = (0.0, 1.0)
RANGES: dict[str, tuple[float, float]] = {
    # perfusion
    "map_mmhg": (0.0, 300.0),
    "map_median_1min_mmhg": (0.0, 300.0),
    "map_min_60min_mmhg": (0.0, 300.0),
    "map_time_below_65_60min_min": (0.0, 60.0),
    "nbp_map_mmhg": (0.0, 300.0),
    "nbp_map_low_count": (0.0, math.inf),
    "heart_rate_per_min": (0.0, 350.0),
    "sbp_mmhg": (0.0, 350.0),
    "shock_index": (0.0, math.inf),
    "lactate_mmol_l": (0.0, 40.0),
    "lactate_clearance_due": FLAG,
    "capillary_refill_s": (0.0, 30.0),
    # renal
    "creatinine_mg_dl": (0.0, 30.0),
    "creatinine_baseline_mg_dl": (0.0, 30.0),
    "kdigo_creatinine_stage": (0.0, 3.0),
    "urine_output_6h_ml_kg_h": (0.0, math.inf),
    "urine_output_12h_ml_kg_h": (0.0, math.inf),
    "urine_output_24h_ml_kg_h": (0.0, math.inf),
    "urine_output_24h_ml": (0.0, math.inf),
    "kdigo_urine_output_stage": (0.0, 3.0),
    "kdigo_stage": (0.0, 3.0),
    "furosemide_stress_urine_2h_ml": (0.0, math.inf),
    "furosemide_stress_nonresponse": FLAG,
    "crrt_liberation_signal": FLAG,
    # congestion
    "cvp_median_5min_mmhg": (-20.0, 60.0),
    "rvd_grade": (0.0, 2.0),
    "rvd_discontinuous": FLAG,
    "cvp_rising_with_discontinuous_rvd": FLAG,
    # brain
    "rso2_left_pct": PCT,
    "rso2_right_pct": PCT,
    "rso2_min_pct": PCT,
    "rso2_baseline_left_pct": PCT,
    "rso2_baseline_right_pct": PCT,
    "rso2_drop_from_baseline_pct": (-math.inf, 100.0),
    "rso2_asymmetry_points": PCT,
    "rso2_area_below_50_60min_pct_min": (0.0, 50.0 * 60.0),
    "nse_ng_ml": (0.0, math.inf),
    # respiratory and other organs
    "spo2_pct": PCT,
    "resp_rate_per_min": (0.0, 100.0),
    "fio2_pct": (21.0, 100.0),
    "pao2_mmhg": (0.0, 800.0),
    "pf_ratio_mmhg": (0.0, 800.0 / 0.21),
    "sf_ratio": (0.0, 100.0 / 0.21),
    "platelets_10e3_ul": (0.0, 2000.0),
    "bilirubin_mg_dl": (0.0, 60.0),
    "gcs_total": (3.0, 15.0),
    "temperature_cel": (25.0, 45.0),
    "norepinephrine_ug_kg_min": (0.0, math.inf),
    "epinephrine_ug_kg_min": (0.0, math.inf),
    "dopamine_ug_kg_min": (0.0, math.inf),
    "dobutamine_ug_kg_min": (0.0, math.inf),
    "vasopressor_on": FLAG,
    # CRRT
    "crrt_running": FLAG,
    "crrt_blood_flow_ml_min": (0.0, 600.0),
    "crrt_blood_pump_stopped_s": (0.0, math.inf),
    "crrt_effluent_dose_ml_kg_h": (0.0, math.inf),
    "crrt_downtime_24h_min": (0.0, 24 * 60.0),
    # other labs (the plausible ranges of schemas.units)
    "ph": (6.5, 8.0),
    "paco2_mmhg": (5.0, 200.0),
    "base_excess_mmol_l": (-40.0, 40.0),
    "sao2_pct": (30.0, 100.0),
    "bicarbonate_mmol_l": (1.0, 70.0),
    "glucose_mg_dl": (5.0, 2500.0),
    "potassium_mmol_l": (0.5, 12.0),
    "bun_mg_dl": (0.0, 300.0),
    "chloride_mmol_l": (50.0, 160.0),
    "calcium_mg_dl": (1.0, 25.0),
    "magnesium_mg_dl": (0.2, 15.0),
    "phosphate_mg_dl": (0.1, 25.0),
    "wbc_10e3_ul": (0.0, 500.0),
    "hemoglobin_g_dl": (1.0, 25.0),
    "hematocrit_pct": (5.0, 80.0),
    "ast_u_l": (0.0, 30000.0),
    "alkaline_phosphatase_u_l": (0.0, 10000.0),
    "bilirubin_direct_mg_dl": (0.0, 60.0),
    "ptt_s": (5.0, 250.0),
    "fibrinogen_mg_dl": (10.0, 2000.0),
    "troponin_i_ng_ml": (0.0, 1000.0),
}
"""Plausible range of each feature's value (unit sanity); features not listed are unbounded."""
INTEGERS = frozenset(
    {
        "nbp_map_low_count",
        "lactate_clearance_due",
        "kdigo_creatinine_stage",
        "kdigo_urine_output_stage",
        "kdigo_stage",
        "furosemide_stress_nonresponse",
        "crrt_liberation_signal",
        "rvd_grade",
        "rvd_discontinuous",
        "cvp_rising_with_discontinuous_rvd",
        "gcs_total",
        "vasopressor_on",
        "crrt_running",
    }
)
"""Stages, counts and 0/1 flags: whole numbers when known."""


# ---- the input stream ------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """A numeric, non-artefact measurement, arriving in simulated second ``second``."""

    second: int
    quantity: Quantity
    at_s: float
    value: float


@dataclass(frozen=True)
class Chart:
    """A context event, arriving in simulated second ``second``."""

    second: int
    event: PatientContext
    at_s: float


Step = Sample | Chart


@dataclass
class BedStream:
    """One patient's inputs in arrival order, and the facts ``PatientState`` would pass."""

    name: str
    seconds: int
    steps: list[Step] = field(default_factory=list)
    weights: list[tuple[float, float]] = field(default_factory=list)
    flowing: list[float] = field(default_factory=list)  # times of blood flow > 0

    def facts(self, at_s: float) -> PatientFacts:
        i = bisect.bisect_right(self.weights, (at_s, math.inf))
        j = bisect.bisect_right(self.flowing, at_s)
        return PatientFacts(
            weight_kg=self.weights[i - 1][1] if i else None,
            on_crrt=bool(j) and at_s - self.flowing[j - 1] <= 86400.0,
        )

    def finish(self) -> BedStream:
        self.steps.sort(key=lambda s: s.second)  # stable: supplements after the simulator's
        for step in self.steps:
            if isinstance(step, Chart) and isinstance(step.event, Weight):
                self.weights.append((step.at_s, step.event.weight_kg))
            elif (
                isinstance(step, Sample)
                and step.quantity is Quantity.CRRT_BLOOD_FLOW
                and step.value > 0
            ):
                self.flowing.append(step.at_s)
        self.weights.sort()
        self.flowing.sort()
        return self


def _simulate(config: IcuConfig, prefix: str) -> dict[str, BedStream]:
    """Every bed's inputs, routed and filtered the way ``PatientState`` does."""
    beds: dict[str, BedStream] = {}
    last_at: dict[tuple[str, Quantity], float] = {}
    for second, records in simulate_icu(config, clock=lambda: START):
        for record in records:
            payload = record.payload
            if record.topic == "groundtruth":
                continue
            bed = f"{prefix}{record.key}"
            stream = beds.setdefault(bed, BedStream(bed, config.duration_s or 0))
            if isinstance(payload, ObservationMessage):
                for m in payload.measurements:
                    if m.quantity is None or m.value is None:
                        continue
                    at = m.observed_at.timestamp()
                    if record.topic in FREQUENT_SOURCES:
                        previous = last_at.get((bed, m.quantity))
                        if previous is not None and at <= previous:
                            continue  # late: PatientState drops it
                        last_at[bed, m.quantity] = at
                    if m.artefact or not QUANTITIES[m.quantity].numeric:
                        continue
                    stream.steps.append(Sample(second, m.quantity, at, m.value))
            else:
                assert record.topic == "context", record.topic
                event = ContextEvent.model_validate(payload).root
                stream.steps.append(Chart(second, event, event.observed_at.timestamp()))
    return beds


def _context(
    kind: Callable[..., PatientContext], patient: str, second: int, **fields: Any
) -> Chart:
    at = START + timedelta(seconds=second)
    event = kind(
        patient_id=patient,
        observed_at=at,
        received_at=at,
        source=SourceInfo(adapter="test"),
        **fields,
    )
    return Chart(second, event, at.timestamp())


def _late(chart: Chart, arrives: int) -> Chart:
    """The same charting, arriving ``arrives`` (after a later one: out of order)."""
    return Chart(arrives, chart.event, chart.at_s)


def _septic_extras(stream: BedStream, patient: str) -> list[Step]:
    """Pulse rate, capillary refill (one charted late), drips in mg/h and U/min."""
    extra: list[Step] = [
        Sample(s.second, Quantity.PULSE_RATE, s.at_s, s.value + 1)
        for s in stream.steps
        if isinstance(s, Sample) and s.quantity is Quantity.HEART_RATE and s.second % 5 == 0
    ]
    refill = [
        _context(CapillaryRefill, patient, minute * 60, seconds=seconds)
        for minute, seconds in ((25, 2.5), (55, 3.0), (85, 4.0), (115, 3.5))
    ]
    refill[-2] = _late(refill[-2], 117 * 60)
    return [
        *extra,
        *refill,
        _context(Infusion, patient, 60 * 60, drug=Drug.DOBUTAMINE, rate=20.0, rate_unit="mg/h"),
        _context(
            Infusion, patient, 70 * 60, drug=Drug.EPINEPHRINE, rate=0.05, rate_unit="ug/kg/min"
        ),
        _context(Infusion, patient, 90 * 60, drug=Drug.VASOPRESSIN, rate=0.03, rate_unit="U/min"),
        _context(
            Infusion, patient, 105 * 60, drug=Drug.EPINEPHRINE, rate=0.0, rate_unit="ug/kg/min"
        ),
    ]


def _congestion_extras(stream: BedStream, patient: str) -> list[Step]:
    """Furosemide (dose, then a drip), a drain charted late, a CVP mean channel for 30 min."""
    drain = _context(FluidBalanceEntry, patient, 50 * 60, direction="out", volume_ml=150.0)
    return [
        _context(DrugDose, patient, 30 * 60, drug=Drug.FUROSEMIDE, dose_mg=80.0),
        _context(Infusion, patient, 80 * 60, drug=Drug.FUROSEMIDE, rate=10.0, rate_unit="mg/h"),
        _late(drain, 65 * 60),
        *(
            Sample(s.second, Quantity.CVP_MEAN, s.at_s, s.value)
            for s in stream.steps
            if isinstance(s, Sample)
            and s.quantity is Quantity.CVP
            and 60 * 60 <= s.second < 90 * 60
            and s.second % 5 == 0
        ),
    ]


def _brain_extras(stream: BedStream, patient: str) -> list[Step]:
    """NSE results: the later specimen's arrives first."""
    return [
        Sample(50 * 60, Quantity.NSE, T0 + 35 * 60, 21.0),
        Sample(70 * 60, Quantity.NSE, T0 + 5 * 60, 14.5),
    ]


OTHER_LABS: tuple[tuple[Quantity, float], ...] = (
    (Quantity.PACO2, 31.0),
    (Quantity.BASE_EXCESS, -6.5),
    (Quantity.SAO2, 94.0),
    (Quantity.GLUCOSE, 182.0),
    (Quantity.CHLORIDE, 109.0),
    (Quantity.CALCIUM, 7.9),
    (Quantity.MAGNESIUM, 1.8),
    (Quantity.PHOSPHATE, 4.6),
    (Quantity.HEMATOCRIT, 29.5),
    (Quantity.AST, 88.0),
    (Quantity.ALKALINE_PHOSPHATASE, 131.0),
    (Quantity.BILIRUBIN_DIRECT, 0.9),
    (Quantity.PTT, 41.0),
    (Quantity.FIBRINOGEN, 512.0),
    (Quantity.TROPONIN_I, 0.12),
)
"""Labs of the PhysioNet 2019 columns the simulator does not send."""


def _other_labs_extras(stream: BedStream, patient: str) -> list[Step]:
    """The labs the simulator does not send, twice; one result of the second draw is
    reported before the first draw's (a late report of an older specimen)."""
    first = [Sample(40 * 60, q, T0 + 25 * 60, v) for q, v in OTHER_LABS]
    second = [Sample(100 * 60, q, T0 + 90 * 60, v * 0.95) for q, v in OTHER_LABS]
    early, late = second[0], first[0]
    return [
        *first[1:],
        *second[1:],
        Sample(95 * 60, early.quantity, early.at_s, early.value),
        Sample(100 * 60, late.quantity, late.at_s, late.value),
    ]


SUPPLEMENTS: dict[str, tuple[Callable[[BedStream, str], list[Step]], ...]] = {
    "ward/sim-001": (_septic_extras, _other_labs_extras),
    "ward/sim-002": (_congestion_extras,),
    "ward/sim-003": (_brain_extras,),
    "everything/sim-001": (
        _septic_extras,
        _congestion_extras,
        _brain_extras,
        _other_labs_extras,
    ),
}
"""Inputs the simulator does not send, so that every quantity of every group is exercised."""


@cache
def streams() -> tuple[BedStream, ...]:
    """The ward's four beds (2 h) and the bed with every device and scenario (7 h)."""
    beds = {**_simulate(WARD, "ward/"), **_simulate(EVERYTHING, "everything/")}
    for name, stream in beds.items():
        patient = name.split("/")[1]
        extra = [step for add in SUPPLEMENTS.get(name, ()) for step in add(stream, patient)]
        stream.steps += extra
    return tuple(s.finish() for s in beds.values())


# ---- driving a group -------------------------------------------------------------------


def relevant(kind: type[FeatureGroup], steps: Iterable[Step]) -> list[Step]:
    """The steps ``PatientState`` would pass to a group of ``kind``."""
    return [s for s in steps if isinstance(s, Chart) or s.quantity in kind.quantities]


def apply(group: FeatureGroup, step: Step) -> None:
    if isinstance(step, Sample):
        group.observe(step.quantity, step.at_s, step.value)
    else:
        group.observe_context(step.event, step.at_s)


def checkpoints(start: int, end: int, every: int = EVERY_S) -> list[int]:
    """Seconds ``> start`` and ``<= end`` on the grid (features asked after that second)."""
    first = (start // every + 1) * every
    return list(range(first, end + 1, every))


def play(
    group: FeatureGroup,
    stream: BedStream,
    steps: Sequence[Step],
    asked: Sequence[int],
) -> list[Features]:
    """Feed ``steps`` in order; after every second in ``asked``, the features as of it."""
    found: list[Features] = []
    pending = iter(asked)
    at = next(pending, None)

    def ask(second: int) -> None:
        t = T0 + second
        found.append(group.features(t, stream.facts(t)))

    for step in steps:
        while at is not None and step.second > at:
            ask(at)
            at = next(pending, None)
        apply(group, step)
    while at is not None:
        ask(at)
        at = next(pending, None)
    return found


@cache
def baseline(name: str, bed: str) -> tuple[Features, ...]:
    """Features of a fresh group over a whole stream, asked once a minute."""
    kind = _GROUP_TYPES[name]
    stream = next(s for s in streams() if s.name == bed)
    steps = relevant(kind, stream.steps)
    return tuple(play(kind(), stream, steps, checkpoints(0, stream.seconds)))


def beds() -> list[str]:
    return [s.name for s in streams()]


def json_state(group: FeatureGroup) -> str:
    """The group's state as strict JSON (no NaN or infinity: a changelog must parse it)."""
    return json.dumps(group.to_state(), allow_nan=False, sort_keys=True)


def expected_names(name: str) -> frozenset[str]:
    assert name in GROUP_ORGANS, f"new feature group {name!r}: add its organs to GROUP_ORGANS"
    return frozenset(n for n, spec in FEATURES.items() if spec.organ in GROUP_ORGANS[name])


def bad_values(features: Features) -> list[tuple[str, object]]:
    """Values that are neither None nor a finite int/float (bools are not numbers here)."""
    return [
        (name, value)
        for name, value in features.items()
        if value is not None
        and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        )
    ]


def first_difference(
    expected: Sequence[Features], actual: Sequence[Features], asked: Sequence[int]
) -> str | None:
    """The first checkpoint where two runs differ, as a readable message."""
    if len(expected) != len(actual):
        return f"{len(expected)} answers vs {len(actual)}"
    for second, want, got in zip(asked, expected, actual, strict=True):
        if want != got:
            names = sorted(n for n in want.keys() | got.keys() if want.get(n) != got.get(n))
            detail = ", ".join(f"{n}: {want.get(n)!r} != {got.get(n)!r}" for n in names[:6])
            return f"at second {second}: {detail}"
    return None


GROUPS = sorted(_GROUP_TYPES)


# ---- the stream ------------------------------------------------------------------------


@pytest.mark.parametrize("name", GROUPS)
def test_the_stream_exercises_every_input_and_feature_of_the_group(name: str) -> None:
    """Every quantity the group reads is in the stream, every feature is known at times
    (a feature that is always None would pass every other test here trivially)."""
    kind = _GROUP_TYPES[name]
    seen = {s.quantity for st in streams() for s in st.steps if isinstance(s, Sample)}
    assert kind.quantities <= seen, sorted(q.value for q in kind.quantities - seen)
    known = {
        n
        for bed in beds()
        for features in baseline(name, bed)
        for n, value in features.items()
        if value is not None
    }
    never = expected_names(name) - known - NEED_MORE_THAN_7H
    assert not never, f"{name}: never known on the test stream: {sorted(never)}"


def test_groups_and_patient_state_cover_the_catalogue_once() -> None:
    owners: dict[str, list[str]] = {}
    for name, kind in _GROUP_TYPES.items():
        group = kind()
        for feature in group.features(T0, PatientFacts()):
            owners.setdefault(feature, []).append(name)
    twice = {f: o for f, o in owners.items() if len(o) > 1}
    assert not twice, f"features output by more than one group: {twice}"
    unknown = sorted(set(owners) - set(FEATURES))
    assert not unknown, f"features not in the catalogue: {unknown}"
    own = {n for n, spec in FEATURES.items() if spec.organ in PATIENT_STATE_ORGANS}
    missing = sorted(set(FEATURES) - set(owners) - own)
    assert not missing, f"catalogue features no group outputs: {missing}"
    assert not (set(owners) & own), "a group outputs a score or technical feature"


# ---- outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", GROUPS)
def test_outputs_exactly_the_catalogue_features_of_its_organs(name: str) -> None:
    expected = expected_names(name)
    for bed in beds():
        for i, features in enumerate(baseline(name, bed)):
            got = set(features)
            assert got == expected, (
                f"{name} on {bed} at minute {i + 1}: extra {sorted(got - expected)}, "
                f"missing {sorted(expected - got)}"
            )


@pytest.mark.parametrize("name", GROUPS)
def test_every_value_is_unknown_or_a_finite_number_in_range(name: str) -> None:
    problems: list[str] = []
    for bed in beds():
        for minute, features in enumerate(baseline(name, bed), start=1):
            for feature, value in bad_values(features):
                problems.append(f"{bed} min {minute}: {feature}={value!r}")
            for feature, value in features.items():
                if value is None or isinstance(value, bool) or not math.isfinite(value):
                    continue
                lo, hi = RANGES.get(feature, (-math.inf, math.inf))
                if not lo <= value <= hi:
                    problems.append(f"{bed} min {minute}: {feature}={value!r} not in [{lo}, {hi}]")
                if feature in INTEGERS and value != int(value):
                    problems.append(f"{bed} min {minute}: {feature}={value!r} not whole")
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("name", GROUPS)
def test_percentages_of_saturation_are_known_and_within_0_100(name: str) -> None:
    """Unit sanity where the stream has the signal: SpO2 and rSO2 are percent, not fraction."""
    checked = {
        "organs": ("spo2_pct", "fio2_pct"),
        "brain": ("rso2_left_pct", "rso2_right_pct", "rso2_baseline_left_pct"),
    }.get(name, ())
    for feature in checked:
        values = [
            f[feature] for bed in beds() for f in baseline(name, bed) if f[feature] is not None
        ]
        assert values, f"{feature} never known on the test stream"
        assert all(20.0 <= v <= 100.0 for v in values if v is not None), (feature, values[:10])


# ---- state -----------------------------------------------------------------------------


def _continue_after(
    name: str, bed: str, split: int, restore: Callable[[FeatureGroup], FeatureGroup]
) -> tuple[list[Features], list[Features], list[int]]:
    """Feed until ``split``; then the original and ``restore(original)`` fed the rest."""
    kind = _GROUP_TYPES[name]
    stream = next(s for s in streams() if s.name == bed)
    steps = relevant(kind, stream.steps)
    head = [s for s in steps if s.second < split]
    tail = steps[len(head) :]
    original = kind()
    play(original, stream, head, checkpoints(0, split - 1))
    copy = restore(original)
    asked = checkpoints(split - 1, stream.seconds)
    return (
        play(original, stream, tail, asked),
        play(copy, stream, tail, asked),
        asked,
    )


@pytest.mark.parametrize("name", GROUPS)
def test_pickled_mid_stream_gives_identical_later_features(name: str) -> None:
    def restore(group: FeatureGroup) -> FeatureGroup:
        copy: FeatureGroup = pickle.loads(pickle.dumps(group))
        return copy

    for bed in beds():
        original, restored, asked = _continue_after(name, bed, 3600, restore)
        assert first_difference(original, restored, asked) is None, (
            bed,
            first_difference(original, restored, asked),
        )


@pytest.mark.parametrize("split", [2417, 4500])
@pytest.mark.parametrize("name", GROUPS)
def test_json_state_round_trip_gives_identical_later_features(name: str, split: int) -> None:
    kind = _GROUP_TYPES[name]

    def restore(group: FeatureGroup) -> FeatureGroup:
        state = json.loads(json_state(group))
        copy = kind.from_state(state)
        assert json.loads(json_state(copy)) == state, "from_state(s).to_state() != s"
        return copy

    for bed in beds():
        original, restored, asked = _continue_after(name, bed, split, restore)
        difference = first_difference(original, restored, asked)
        assert difference is None, f"{name} on {bed}, restored at second {split}: {difference}"


@pytest.mark.parametrize("name", GROUPS)
def test_two_fresh_instances_fed_the_same_stream_agree_exactly(name: str) -> None:
    kind = _GROUP_TYPES[name]
    for stream in streams():
        steps = relevant(kind, stream.steps)
        asked = checkpoints(0, stream.seconds)
        one, two = kind(), kind()
        first = play(one, stream, steps, asked)
        second = play(two, stream, steps, asked)
        assert first_difference(first, second, asked) is None, stream.name
        assert first == list(baseline(name, stream.name))
        assert json_state(one) == json_state(two)


@pytest.mark.parametrize("name", GROUPS)
def test_asking_more_often_does_not_change_the_answers(name: str) -> None:
    """``features`` is a query: its caches must not make answers depend on when it was asked."""
    kind = _GROUP_TYPES[name]
    for stream in streams():
        steps = relevant(kind, stream.steps)
        often = checkpoints(0, stream.seconds, every=7)
        answers = dict(zip(often, play(kind(), stream, steps, often), strict=True))
        asked = [s for s in checkpoints(0, stream.seconds) if s in answers]
        rarely = [baseline(name, stream.name)[s // EVERY_S - 1] for s in asked]
        difference = first_difference(rarely, [answers[s] for s in asked], asked)
        assert difference is None, f"{name} on {stream.name}: {difference}"


# ---- missing input ---------------------------------------------------------------------


@pytest.mark.parametrize("name", GROUPS)
def test_fed_nothing_every_feature_is_unknown(name: str) -> None:
    kind = _GROUP_TYPES[name]
    for facts in (
        PatientFacts(),
        PatientFacts(weight_kg=80.0, on_crrt=True, diuretic_exposed=True),
    ):
        group = kind()
        for at in (T0, T0 + 86400.0):
            features = group.features(at, facts)
            assert set(features) == expected_names(name)
            known = {n: v for n, v in features.items() if v is not None}
            documented = {n: v for n, v in DOCUMENTED_DEFAULTS.items() if n in features}
            assert known == documented, f"known without input: {known}"
        restored = kind.from_state(json.loads(json_state(group)))
        assert restored.features(T0, facts) == group.features(T0, facts)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("name", GROUPS)
def test_random_missing_input_never_raises_nor_gives_nan(name: str, seed: int) -> None:
    """Whole quantities removed, half of the rest and half of the charting dropped."""
    kind = _GROUP_TYPES[name]
    rng = random.Random(f"{name}/{seed}")
    quantities = sorted(kind.quantities, key=lambda q: q.value)
    kept = {q for q in quantities if rng.random() < 0.5}
    for stream in streams():
        steps = [
            s
            for s in relevant(kind, stream.steps)
            if (isinstance(s, Chart) or s.quantity in kept) and rng.random() < 0.5
        ]
        asked = checkpoints(0, stream.seconds, every=EVERY_S + seed)
        group = kind()
        for minute, features in enumerate(play(group, stream, steps, asked)):
            assert set(features) == expected_names(name)
            bad = bad_values(features)
            assert not bad, f"{stream.name}, kept {sorted(q.value for q in kept)}, #{minute}: {bad}"
        json_state(group)


# ---- bounded state ---------------------------------------------------------------------

STATE_GROWTH_MARGIN = 4096
"""Bytes of JSON state allowed to appear between 2 h and 6 h. Long-horizon aggregates
(hourly urine and fluid amounts, 24-h integrals, labs every few hours) may add a few
entries; one retained 1-Hz sample per second would add ~100 kB over those 4 h."""


@pytest.mark.parametrize("name", GROUPS)
def test_state_does_not_grow_with_time(name: str) -> None:
    kind = _GROUP_TYPES[name]
    stream = next(s for s in streams() if s.name.startswith("everything/"))
    assert stream.seconds >= 6 * HOUR
    steps = relevant(kind, stream.steps)
    group = kind()
    sizes: dict[int, int] = {}
    done = 0
    for hours in range(1, 7):
        end = hours * HOUR
        part = [s for s in steps if done <= s.second < end]
        play(group, stream, part, checkpoints(done - 1, end - 1))
        sizes[hours] = len(json_state(group))
        done = end
    # windows fill within the first hours (and may empty, e.g. a new CRRT circuit):
    # the state at 6 h is no bigger than the largest of hours 1-3, plus a margin
    growth = sizes[6] - max(sizes[h] for h in (1, 2, 3))
    assert growth < STATE_GROWTH_MARGIN, f"{name}: JSON state bytes by hour {sizes}"
