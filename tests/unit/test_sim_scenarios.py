"""Each scenario of the simulated ICU leaves its signature in the records it publishes."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from schemas.codes import Quantity
from schemas.context import Infusion, RenalVenousDoppler, UrineOutput
from schemas.topics import TopicRegistry
from services.ingest import Outbound
from services.sim import IcuConfig, Scenario, ground_truth, simulate_icu
from services.sim.physiology import Baseline
from services.sim.scenarios import equipment_of

START = datetime(2026, 4, 1, 6, 0, tzinfo=UTC)
SEED = 31
RUN_S = 4000
PLAN = (
    Scenario("hypotension", 1, 120, 600),
    Scenario("septic_shock", 2, 600, 3 * 3600),
    Scenario("cerebral_desaturation", 3, 300, 600, side="right"),
    Scenario("crrt_filter_clotting", 4, 60, 3000),
    Scenario("device_disconnect", 5, 1000, 120),
    Scenario("device_disconnect", 3, 2000, 60, device="nirs"),
    Scenario("artefact_ecg_lead_off", 6, 200, 40),
    Scenario("artefact_arterial_flush", 6, 400, 20),
    Scenario("artefact_arterial_zeroing", 6, 600, 30),
    Scenario("artefact_spo2_motion", 6, 800, 60),
    Scenario("artefact_arterial_damping", 6, 1000, 300),
    Scenario("artefact_nirs_sensor_lift", 3, 1500, 100, side="left"),
)
Run = list[tuple[int, list[Outbound]]]


def clock() -> datetime:
    return START


@pytest.fixture(scope="module")
def icu() -> Run:
    config = IcuConfig(beds=6, seed=SEED, start=START, duration_s=RUN_S, scenarios=PLAN)
    return list(simulate_icu(config, clock))


def at(second: float) -> datetime:
    return START + timedelta(seconds=second)


def records(run: Run, topic: str, bed: int) -> list[tuple[int, Any]]:
    key = f"sim-{bed:03d}"
    return [(s, r.payload) for s, batch in run for r in batch if r.topic == topic and r.key == key]


def trace(run: Run, topic: str, bed: int, quantity: Quantity) -> dict[int, float | None]:
    """Second -> value of ``quantity`` (None when sent but artefact, absent when not sent)."""
    found: dict[int, float | None] = {}
    for second, message in records(run, topic, bed):
        for m in message.measurements:
            if m.quantity is quantity:
                found[second] = None if m.artefact else m.value
    return found


def window(values: dict[int, float | None], start: float, end: float) -> np.ndarray:
    return np.array([v for s, v in values.items() if start <= s < end and v is not None])


def test_every_record_validates_against_its_topic_payload_and_round_trips(icu: Run) -> None:
    registry = TopicRegistry()
    seen: dict[str, int] = defaultdict(int)
    for _second, batch in icu:
        for record in batch:
            model: type[BaseModel] = registry.spec(record.topic).payload
            decoded = model.model_validate_json(record.value())
            assert decoded.model_dump_json() == record.value().decode()
            seen[record.topic] += 1
    assert set(seen) == {"groundtruth", "context", "vitals", "nirs", "crrt", "labs"}


def test_ground_truth_comes_first_and_matches_the_plan(icu: Run) -> None:
    first = icu[0][1]
    n = len(PLAN)
    assert [r.topic for r in first[:n]] == ["groundtruth"] * n
    assert all(r.topic != "groundtruth" for _s, batch in icu[1:] for r in batch)
    truth = [r.payload for r in first[:n]]
    expected = {(s.name, f"sim-{s.bed:03d}", at(s.onset_s), at(s.end_s)) for s in PLAN}
    assert {(t.scenario, t.patient_id, t.onset, t.end) for t in truth} == expected
    assert {t.run_id for t in truth} == {f"sim-{SEED}-20260401T060000Z"}
    [septic] = [t for t in truth if t.scenario == "septic_shock"]
    assert "cardiovascular" in septic.organs


def test_septic_shock_map_low_lactate_up_norepinephrine_fever_oliguria(icu: Run) -> None:
    onset, plateau = 600, 600 + 1800
    map_ = trace(icu, "vitals", 2, Quantity.ABP_MEAN)
    assert np.median(window(map_, 0, onset)) >= 70
    assert np.median(window(map_, plateau, RUN_S)) < 65
    hr = trace(icu, "vitals", 2, Quantity.HEART_RATE)
    assert np.median(window(hr, plateau, RUN_S)) - np.median(window(hr, 0, onset)) >= 20
    temp = trace(icu, "vitals", 2, Quantity.TEMPERATURE)
    assert np.median(window(temp, RUN_S - 300, RUN_S)) - np.median(window(temp, 0, onset)) > 1
    lactate = [
        (m.observed_at, m.value)
        for _s, msg in records(icu, "labs", 2)
        for m in msg.measurements
        if m.quantity is Quantity.LACTATE
    ]
    assert lactate[0][1] < 2, "admission lactate is normal"  # septic lactate: test_sim_realism
    drips = [p for _s, p in records(icu, "context", 2) if isinstance(p, Infusion)]
    assert drips[0].drug == "norepinephrine"
    assert drips[0].observed_at > at(onset)
    assert [d.rate for d in drips] == sorted(d.rate for d in drips)
    [urine] = [p for _s, p in records(icu, "context", 2) if isinstance(p, UrineOutput)]
    b = Baseline.draw(SEED, 2, equipment_of(SEED, 2, PLAN[1:2]))
    assert urine.volume_ml < 0.7 * b.urine_ml_kg_h * b.weight_kg


def test_hypotension_bed_keeps_its_episode(icu: Run) -> None:
    map_ = trace(icu, "vitals", 1, Quantity.ABP_MEAN)
    assert np.median(window(map_, 150, 690)) == pytest.approx(56, abs=3)
    assert np.median(window(map_, 0, 120)) >= 70


def test_cerebral_desaturation_drops_below_80_percent_of_baseline_with_asymmetry(
    icu: Run,
) -> None:
    first = records(icu, "nirs", 3)[0][1]
    baseline_right = first.value_of(Quantity.RSO2_BASELINE_RIGHT)
    assert baseline_right is not None
    assert first.value_of(Quantity.RSO2_BASELINE_LEFT) is not None
    left = trace(icu, "nirs", 3, Quantity.RSO2_LEFT)
    right = trace(icu, "nirs", 3, Quantity.RSO2_RIGHT)
    plateau = [s for s in right if 300 + 150 <= s < 900 - 150]
    assert plateau
    for s in plateau:
        assert right[s] < 0.8 * baseline_right  # type: ignore[operator]
        assert abs(left[s] - right[s]) > 10  # type: ignore[operator]
    calm = [s for s in right if s < 300]
    assert all(right[s] > 0.9 * baseline_right for s in calm)  # type: ignore[operator]


def test_nirs_sensor_lift_shows_no_value_then_rebaselines(icu: Run) -> None:
    left = trace(icu, "nirs", 3, Quantity.RSO2_LEFT)
    right = trace(icu, "nirs", 3, Quantity.RSO2_RIGHT)
    lift = range(1500, 1600, 5)
    assert all(s not in left for s in lift), "no plausible-looking 15 % while lifted"
    assert all(s in right for s in lift), "the other channel goes on"
    assert {1495, 1600} <= set(left)
    rebaselined = [s for s, m in records(icu, "nirs", 3) if m.value_of(Quantity.RSO2_BASELINE_LEFT)]
    assert rebaselined == [0, 1600]


def test_crrt_clotting_pressures_rise_then_the_blood_pump_stops_with_an_alarm(icu: Run) -> None:
    status = records(icu, "crrt", 4)
    assert [s for s, _ in status][:3] == [0, 60, 120]
    tmp = trace(icu, "crrt", 4, Quantity.CRRT_TMP)
    pre = trace(icu, "crrt", 4, Quantity.CRRT_PREFILTER_PRESSURE)
    drop = trace(icu, "crrt", 4, Quantity.CRRT_FILTER_PRESSURE_DROP)
    flow = trace(icu, "crrt", 4, Quantity.CRRT_BLOOD_FLOW)
    stop = 60 + int(0.85 * 3000)
    last = max(s for s in tmp if s < stop)
    for series_, rise in ((tmp, 120), (pre, 120), (drop, 120)):
        assert series_[last] - series_[60] >= rise  # type: ignore[operator]
    assert tmp[last] >= 260  # type: ignore[operator]
    assert all(flow[s] > 0 for s in flow if s < stop)  # type: ignore[operator]
    assert all(flow[s] == 0 for s in flow if stop <= s < 3060)
    assert flow[3060] > 0, "a new circuit after the change"  # type: ignore[operator]
    alarms = {s: m for s, msg in status for m in msg.measurements if m.value_text}
    stopped = [s for s, m in alarms.items() if "pump stopped" in (m.value_text or "")]
    assert stopped
    assert stopped[0] >= stop


def test_device_disconnect_leaves_a_gap(icu: Run) -> None:
    seconds = {s for s, _ in records(icu, "vitals", 5)}
    assert set(range(1000, 1120)).isdisjoint(seconds)
    assert {999, 1120} <= seconds
    nirs = {s for s, _ in records(icu, "nirs", 3)}
    assert set(range(2000, 2060)).isdisjoint(nirs)
    assert 2060 in nirs


@pytest.mark.parametrize(
    ("second", "quantity", "check"),
    [
        (220, Quantity.HEART_RATE, lambda m: m.value == 0 and m.artefact),
        (410, Quantity.ABP_MEAN, lambda m: m.value >= 290 and m.artefact),
        (410, Quantity.ABP_SYS, lambda m: 290 <= m.value <= 310),
        (615, Quantity.ABP_MEAN, lambda m: abs(m.value) <= 3 and m.artefact),
    ],
)
def test_artefacts_are_sent_as_devices_send_them_and_flagged_when_implausible(
    icu: Run, second: int, quantity: Quantity, check: Any
) -> None:
    [(_s, message)] = [(s, m) for s, m in records(icu, "vitals", 6) if s == second]
    [m] = [m for m in message.measurements if m.quantity is quantity]
    assert check(m)


def test_spo2_motion_and_damping_stay_plausible_but_are_annotated(icu: Run) -> None:
    spo2 = trace(icu, "vitals", 6, Quantity.SPO2)
    motion = window(spo2, 800, 860)
    assert np.median(motion) < np.median(window(spo2, 0, 200)) - 5
    sys_ = trace(icu, "vitals", 6, Quantity.ABP_SYS)
    dia = trace(icu, "vitals", 6, Quantity.ABP_DIA)
    damped = [sys_[s] - dia[s] for s in range(1000, 1300)]  # type: ignore[operator]
    normal = [sys_[s] - dia[s] for s in range(1400, 1700)]  # type: ignore[operator]
    assert np.median(damped) < 0.5 * np.median(normal)
    truth = {g.scenario for g in ground_truth(IcuConfig(beds=6, start=START, scenarios=PLAN))}
    assert {"artefact_spo2_motion", "artefact_arterial_damping"} <= truth


def test_venous_congestion_cvp_doppler_sequence_oliguria_and_kdigo_creatinine_rise() -> None:
    scenario = Scenario("venous_congestion_aki", 1, 600, 8 * 3600)
    config = IcuConfig(beds=1, seed=SEED, start=START, duration_s=7 * 3600, scenarios=(scenario,))
    run = list(simulate_icu(config, clock))
    cvp = trace(run, "vitals", 1, Quantity.CVP)
    assert np.median(window(cvp, 3 * 3600, 7 * 3600)) - np.median(window(cvp, 0, 600)) >= 8
    context = [p for _s, p in records(run, "context", 1)]
    patterns = [p.pattern for p in context if isinstance(p, RenalVenousDoppler)]
    assert patterns == ["continuous", "biphasic_discontinuous", "monophasic_discontinuous"]
    urine = [p.volume_ml for p in context if isinstance(p, UrineOutput)]
    assert urine[-1] < 0.4 * urine[0]
    drips = [p for p in context if isinstance(p, Infusion)]
    assert [(d.drug, d.rate > 0) for d in drips] == [("furosemide", True)]
    creatinine = trace(run, "labs", 1, Quantity.CREATININE)
    values = [creatinine[s] for s in sorted(creatinine)]
    assert len(values) >= 2
    assert values[-1] - values[0] >= 0.3, "KDIGO stage 1: a rise of at least 0.3 mg/dL"  # type: ignore[operator]
