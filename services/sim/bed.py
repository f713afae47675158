"""The devices of one simulated bed: what monitor, NIRS, CRRT machine, lab and chart send.

Devices emit what real ones emit: rounded numerics at their own rates, including
artefacts (a lead-off HR of 0, a flush at 300 mmHg, a lifted NIRS sensor showing no
value). Every measurement goes through :func:`schemas.units.normalise`, so what is
physically implausible is flagged ``artefact`` exactly as for a real device; the rest
of each artefact is annotated in the ground truth (scenario ``artefact_*``).

Rates: vitals 1 Hz; NBP cuff every 15 min for beds without an arterial line; NIRS
every 5 s (device baseline with the first sample and after a re-applied sensor); CRRT
status every 60 s; labs every 4-6 h (blood gas results after 10 min, chemistry after
45 min); in septic shock a blood gas (with chemistry and blood count, so the organ
changes the ground truth claims are measured) 1 h after onset and then every 2 h until
lactate is back below 2 mmol/L after the episode (lactate re-measured to guide resuscitation:
Surviving Sepsis Campaign 2021, Evans et al., Crit Care Med; clearance re-measured about
every 2 h, CLINICAL.md Perfusion); hourly urine output and fluid intake; GCS every 4 h,
hourly while a clinical scenario is active (neuro checks); infusion rates and the renal
venous Doppler pattern when they change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from schemas.codes import QUANTITIES, Quantity
from schemas.common import SourceInfo
from schemas.context import (
    Admission,
    Drug,
    FluidBalanceEntry,
    Gcs,
    Infusion,
    RenalVenousDoppler,
    UrineOutput,
    Weight,
)
from schemas.observations import CrrtStatus, LabResults, Measurement, NirsSample, VitalSigns
from schemas.units import plausible
from services.ingest import Outbound
from services.sim.physiology import (
    Patient,
    gcs_total,
    renal_venous_doppler_pattern,
)
from services.sim.scenarios import Equipment, Scenario

STREAM_ARTEFACT_NOISE, STREAM_NIRS, STREAM_CRRT, STREAM_LABS, STREAM_CHART = 20, 21, 22, 23, 24

NBP_EVERY_S, NIRS_EVERY_S, CRRT_EVERY_S, GCS_EVERY_S = 900, 5, 60, 4 * 3600
GCS_ACTIVE_EVERY_S = 3600  # hourly neuro checks while the patient is unstable:
NEURO_CHECK_SCENARIOS = frozenset(
    {"hypotension", "septic_shock", "venous_congestion_aki", "cerebral_desaturation"}
)
BLOOD_GAS_TURNAROUND_S, CHEMISTRY_TURNAROUND_S, SEPTIC_GAS_EVERY_S = 600, 2700, 2 * 3600
SEPTIC_FIRST_GAS_S, LACTATE_NORMAL_BELOW = 3600, 2.0
NIRS_FLOOR_PCT, NIRS_CEILING_PCT = 15.0, 95.0


def patient_id_of(bed: int) -> str:
    return f"sim-{bed:03d}"


def bed_label(care_unit: str, bed: int) -> str:
    return f"{care_unit}-{bed:02d}"


def measurement(
    quantity: Quantity, value: float | str, at: datetime, device_id: str
) -> Measurement:
    """A reading as the device sends it, coded in the canonical unit and flagged like any
    adapter's: an implausible value (:func:`schemas.units.plausible`) is kept as artefact.

    Same result as :func:`schemas.units.normalise` for a value in the canonical unit,
    without its code lookup (the simulator codes with each quantity's primary code).

    >>> from datetime import UTC, datetime
    >>> measurement(Quantity.HEART_RATE, 0, datetime(2026, 1, 1, tzinfo=UTC), "m").artefact
    True
    """
    info = QUANTITIES[quantity]
    system, code, label = info.primary
    numeric = not isinstance(value, str)
    fields: dict[str, Any] = {
        "quantity": quantity,
        "code_system": system,
        "code": code,
        "code_label": label,
        "value": float(value) if numeric else None,
        "value_text": None if numeric else str(value),
        "unit": info.ucum_unit,
        "observed_at": at,
        "device_id": device_id,
        "containment": None,
        "artefact": numeric and not plausible(quantity, float(value)),
    }
    return Measurement(**fields)


@dataclass
class _PendingLabs:
    emit_s: int
    specimen_at: datetime
    order_id: str
    values: dict[Quantity, float]


class SimulatedBed:
    """One bed: its patient, its devices and the records they send each second."""

    def __init__(
        self, seed: int, bed: int, care_unit: str, scenarios: tuple[Scenario, ...],
        equipment: Equipment,
    ) -> None:  # fmt: skip
        self.bed = bed
        self.patient_id = patient_id_of(bed)
        self.label = bed_label(care_unit, bed)
        self.care_unit = care_unit
        self.equipment = equipment
        self.patient = Patient(seed, bed, scenarios, equipment)
        self.scenarios = scenarios
        self._artefact_rng = np.random.default_rng([seed, bed, STREAM_ARTEFACT_NOISE])
        self._nirs_rng = np.random.default_rng([seed, bed, STREAM_NIRS])
        self._crrt_rng = np.random.default_rng([seed, bed, STREAM_CRRT])
        self._lab_rng = np.random.default_rng([seed, bed, STREAM_LABS])
        chart = np.random.default_rng([seed, bed, STREAM_CHART])
        self._nbp_phase = int(chart.integers(0, NBP_EVERY_S))
        self._gcs_phase = int(chart.integers(600, 3600))
        self._next_lab_s = int(self._lab_rng.integers(300, 1500))
        self._pending: list[_PendingLabs] = []
        # septic shock: second of the next lactate blood gas, per scenario (None: done)
        self._septic_gas: list[tuple[Scenario, int | None]] = [
            (s, int(s.onset_s) + SEPTIC_FIRST_GAS_S) for s in scenarios if s.name == "septic_shock"
        ]
        self._nirs_drift = np.zeros(2)
        self._nirs_baseline_due = True
        self._lifted_before: set[str] = set()
        self._fluid_removed_ml = 0.0
        self._infusions: dict[Drug, float] = {}
        self._rvd_pattern: str | None = None
        self._t = 0
        self._monitor = f"sim-monitor-{bed:03d}"
        self._nirs = f"sim-nirs-{bed:03d}"
        self._crrt = f"sim-crrt-{bed:03d}"
        self._sources = {
            name: SourceInfo(adapter="simulator", device_id=device)
            for name, device in (
                ("monitor", self._monitor), ("nirs", self._nirs), ("crrt", self._crrt),
                ("lab", "sim-lab"), ("chart", "sim-ehr"),
            )
        }  # fmt: skip

    def _out(self, topic: str, payload: BaseModel) -> Outbound:
        return Outbound(topic=topic, key=self.patient_id, payload=payload)

    def step(self, t: int, at: datetime, received_at: datetime) -> list[Outbound]:
        """The records this bed's devices send at second ``t`` (event time ``at``)."""
        self._t = t
        self.patient.step(t)
        silent = self.patient.effects.silent_devices
        records = self._chart(t, at, received_at)
        if "monitor" not in silent:
            records.append(self._out("vitals", self._vitals(t, at, received_at)))
        if self.equipment.nirs and t % NIRS_EVERY_S == 0 and "nirs" not in silent:
            nirs = self._nirs_sample(at, received_at)
            if nirs is not None:
                records.append(self._out("nirs", nirs))
        if self.equipment.crrt and t % CRRT_EVERY_S == 0:
            status = self._crrt_status(at, received_at)
            if "crrt" not in silent:
                records.append(self._out("crrt", status))
        records += self._labs(t, at, received_at)
        return records

    # --- bedside monitor ---------------------------------------------------------------

    def _vitals(self, t: int, at: datetime, received_at: datetime) -> VitalSigns:
        v = self.patient.vitals
        assert v is not None
        artefacts = self.patient.effects.artefacts
        rng = self._artefact_rng
        hr = 0.0 if "artefact_ecg_lead_off" in artefacts else round(v.heart_rate_per_min)
        spo2 = round(v.spo2_pct)
        if "artefact_spo2_motion" in artefacts:  # erratic, mostly low, sometimes implausible
            spo2 = round(max(0.0, v.spo2_pct - 3.0 - 12.0 * abs(float(rng.normal()))))
        values: list[tuple[Quantity, float]] = [(Quantity.HEART_RATE, hr)]
        if self.equipment.arterial_line:
            sys_, dia, mean = v.abp_sys_mmhg, v.abp_dia_mmhg, v.map_mmhg
            if "artefact_arterial_damping" in artefacts:
                mean, pp = mean - 2.0, (sys_ - dia) * 0.35
                sys_, dia = mean + 2 * pp / 3, mean - pp / 3
            if "artefact_arterial_flush" in artefacts:  # pressure bag on the transducer
                sys_ = 300.0 + 2.0 * float(rng.normal())
                dia, mean = sys_ - 6.0, sys_ - 3.0
            if "artefact_arterial_zeroing" in artefacts:  # open to air
                sys_ = dia = mean = round(float(rng.normal(0.0, 0.7)))
            values += [
                (Quantity.ABP_SYS, round(sys_)),
                (Quantity.ABP_DIA, round(dia)),
                (Quantity.ABP_MEAN, round(mean)),
            ]
        values += [
            (Quantity.SPO2, spo2),
            (Quantity.RESP_RATE, round(v.resp_rate_per_min)),
            (Quantity.TEMPERATURE, round(v.temperature_c, 1)),
        ]
        if self.equipment.central_line:
            values.append((Quantity.CVP, round(v.cvp_mmhg)))
        if not self.equipment.arterial_line and t % NBP_EVERY_S == self._nbp_phase:
            cuff_error = rng.normal(0.0, 4.0, 3)  # oscillometric: measures the mean
            values += [
                (Quantity.NBP_SYS, round(v.abp_sys_mmhg + float(cuff_error[0]))),
                (Quantity.NBP_DIA, round(v.abp_dia_mmhg + float(cuff_error[1]))),
                (Quantity.NBP_MEAN, round(v.map_mmhg + float(cuff_error[2]))),
            ]
        return VitalSigns(
            patient_id=self.patient_id,
            bed=self.label,
            care_unit=self.care_unit,
            source=self._sources["monitor"],
            received_at=received_at,
            measurements=tuple(measurement(q, x, at, self._monitor) for q, x in values),
        )

    # --- cerebral oximeter ---------------------------------------------------------------

    def _nirs_sample(self, at: datetime, received_at: datetime) -> NirsSample | None:
        b, e, v = self.patient.baseline, self.patient.effects, self.patient.vitals
        assert v is not None
        noise = self._nirs_rng.standard_normal(4)
        self._nirs_drift = 0.98 * self._nirs_drift + 0.25 * noise[:2]
        # below the autoregulation plateau, cerebral saturation follows pressure a little
        pressure = 1.0 - 0.005 * max(0.0, 60.0 - v.map_mmhg)
        true = {
            "left": b.rso2_left_pct * e.rso2_left_factor * pressure + self._nirs_drift[0],
            "right": b.rso2_right_pct * e.rso2_right_factor * pressure + self._nirs_drift[1],
        }
        lifted: dict[str, Scenario] = {}
        for name, scenario in e.artefacts.items():
            if name == "artefact_nirs_sensor_lift":
                lifted[scenario.side] = scenario
        if self._lifted_before - set(lifted):
            self._nirs_baseline_due = True  # sensor re-applied: the clinician re-baselines
        self._lifted_before = set(lifted)
        values: list[tuple[Quantity, float]] = []
        for side, quantity, n in (
            ("left", Quantity.RSO2_LEFT, noise[2]),
            ("right", Quantity.RSO2_RIGHT, noise[3]),
        ):
            if side not in lifted:
                reading = true[side] + 0.8 * float(n)
                values.append(
                    (quantity, round(min(NIRS_CEILING_PCT, max(NIRS_FLOOR_PCT, reading))))
                )
            # else: the lifted channel shows no value ("--") and sends none: the oximeter
            # has no reading below its 15 % display floor to send, and a plausible 15 %
            # would pass as a real desaturation (schemas.units.plausible)
        if self._nirs_baseline_due and len(values) == 2:
            values += [
                (Quantity.RSO2_BASELINE_LEFT, round(b.rso2_left_pct)),
                (Quantity.RSO2_BASELINE_RIGHT, round(b.rso2_right_pct)),
            ]
            self._nirs_baseline_due = False
        if not values:
            return None
        return NirsSample(
            patient_id=self.patient_id, bed=self.label, care_unit=self.care_unit,
            source=self._sources["nirs"], received_at=received_at,
            measurements=tuple(measurement(q, x, at, self._nirs) for q, x in values),
        )  # fmt: skip

    # --- CRRT machine ----------------------------------------------------------------

    def _crrt_status(self, at: datetime, received_at: datetime) -> CrrtStatus:
        b, e = self.patient.baseline, self.patient.effects
        n = self._crrt_rng.standard_normal(5)
        running = not e.blood_pump_stopped
        qb = b.crrt_blood_flow_ml_min if running else 0.0
        dialysate, replacement = (1500.0, 1000.0) if running else (0.0, 0.0)
        net_uf = b.crrt_net_uf_ml_h if running else 0.0
        if running:
            access = -(50.0 + 0.4 * qb) + 4.0 * float(n[0])
            prefilter = 100.0 + 0.5 * qb + 160.0 * e.clot + 4.0 * float(n[1])
            ret = 60.0 + 0.3 * qb + 10.0 * e.clot + 3.0 * float(n[2])
            effluent_p = -20.0 - 90.0 * e.clot + 4.0 * float(n[3])
        else:  # pump stopped: pressures settle near zero
            access, prefilter, ret, effluent_p = (3.0 * float(x) for x in n[:4])
        tmp = (prefilter + ret) / 2.0 - effluent_p
        drop = prefilter - ret
        self._fluid_removed_ml += net_uf * CRRT_EVERY_S / 3600.0
        if not running:
            alarm = "blood pump stopped: filter clotted"
        elif tmp >= 260:
            alarm = "TMP high"
        elif prefilter >= 300:
            alarm = "pre-filter pressure high"
        else:
            alarm = "none"
        values: list[tuple[Quantity, float | str]] = [
            (Quantity.CRRT_MODE, "CVVHDF"),
            (Quantity.CRRT_BLOOD_FLOW, qb),
            (Quantity.CRRT_DIALYSATE_RATE, dialysate),
            (Quantity.CRRT_REPLACEMENT_RATE, replacement),
            (Quantity.CRRT_EFFLUENT_RATE, dialysate + replacement + net_uf),
            (Quantity.CRRT_NET_UF_RATE, net_uf),
            (Quantity.CRRT_ACCESS_PRESSURE, round(access)),
            (Quantity.CRRT_PREFILTER_PRESSURE, round(prefilter)),
            (Quantity.CRRT_RETURN_PRESSURE, round(ret)),
            (Quantity.CRRT_EFFLUENT_PRESSURE, round(effluent_p)),
            (Quantity.CRRT_TMP, round(tmp)),
            (Quantity.CRRT_FILTER_PRESSURE_DROP, round(drop)),
            (Quantity.CRRT_FLUID_REMOVED, round(self._fluid_removed_ml)),
            (Quantity.CRRT_MACHINE_ALARM, alarm),
        ]
        return CrrtStatus(
            patient_id=self.patient_id, bed=self.label, care_unit=self.care_unit,
            source=self._sources["crrt"], received_at=received_at,
            measurements=tuple(measurement(q, x, at, self._crrt) for q, x in values),
        )  # fmt: skip

    # --- laboratory ------------------------------------------------------------------

    def _labs(self, t: int, at: datetime, received_at: datetime) -> list[Outbound]:
        if t == self._next_lab_s:
            self._draw(t, at, "gas", BLOOD_GAS_TURNAROUND_S)
            self._draw(t, at, "chem", CHEMISTRY_TURNAROUND_S)
            self._next_lab_s = t + int(self._lab_rng.integers(4 * 3600, 6 * 3600 + 1))
        for i, (s, due_s) in enumerate(self._septic_gas):
            if t == due_s:
                lactate = self._draw(t, at, "gas", BLOOD_GAS_TURNAROUND_S)[Quantity.LACTATE]
                self._draw(t, at, "chem", CHEMISTRY_TURNAROUND_S)
                again = s.active(t) or lactate >= LACTATE_NORMAL_BELOW
                self._septic_gas[i] = (s, t + SEPTIC_GAS_EVERY_S if again else None)
        due = [p for p in self._pending if p.emit_s == t]
        if not due:
            return []
        self._pending = [p for p in self._pending if p.emit_s != t]
        return [
            self._out(
                "labs",
                LabResults(
                    patient_id=self.patient_id, bed=self.label, care_unit=self.care_unit,
                    source=self._sources["lab"], received_at=received_at, order_id=p.order_id,
                    measurements=tuple(
                        measurement(q, x, p.specimen_at, "sim-lab") for q, x in p.values.items()
                    ),
                ),
            )
            for p in due
        ]  # fmt: skip

    def _draw(
        self, t: int, at: datetime, panel: Literal["gas", "chem"], turnaround: int
    ) -> dict[Quantity, float]:
        p, b, e = self.patient.slow, self.patient.baseline, self.patient.effects
        n = self._lab_rng.standard_normal(8)

        def cv(x: float, i: int, coefficient: float = 0.04) -> float:
            return x * (1.0 + coefficient * float(n[i]))

        if panel == "gas":
            values = {
                Quantity.LACTATE: round(cv(p.lactate_mmol_l, 0), 1),
                Quantity.PAO2: round(cv(b.pao2_mmhg + e.pao2_mmhg, 1)),
                Quantity.FIO2: round(b.fio2_pct + e.fio2_pct),
                Quantity.PH: round(b.ph + e.ph + 0.01 * float(n[2]), 2),
                Quantity.BICARBONATE: round(cv(b.bicarbonate_mmol_l + e.bicarbonate_mmol_l, 3), 1),
            }
        else:
            values = {
                Quantity.CREATININE: round(cv(p.creatinine_mg_dl, 0, 0.03), 2),
                Quantity.UREA_NITROGEN: round(cv(b.urea_nitrogen_mg_dl + e.urea_nitrogen_mg_dl, 1)),
                Quantity.POTASSIUM: round(cv(b.potassium_mmol_l + e.potassium_mmol_l, 2, 0.02), 1),
                Quantity.BILIRUBIN_TOTAL: round(cv(p.bilirubin_mg_dl, 3), 1),
                Quantity.PLATELETS: round(cv(p.platelets_k_ul, 4)),
                Quantity.HEMOGLOBIN: round(cv(b.hemoglobin_g_dl, 5, 0.02), 1),
                Quantity.WBC: round(cv(p.wbc_k_ul, 6), 1),
            }
        order = f"{self.patient_id}-{panel}-{t}-{len(self._pending)}"
        self._pending.append(_PendingLabs(t + turnaround, at, order, dict(values)))
        return values

    # --- charting (context topic) ------------------------------------------------------

    def _chart(self, t: int, at: datetime, received_at: datetime) -> list[Outbound]:
        p, b, e = self.patient, self.patient.baseline, self.patient.effects
        common: dict[str, Any] = {
            "patient_id": self.patient_id,
            "observed_at": at,
            "received_at": received_at,
            "source": self._sources["chart"],
        }
        out: list[Outbound] = []
        if t == 0:
            out.append(self._out("context", Admission(
                **common, bed=self.label, care_unit=self.care_unit, age_years=b.age_years,
                sex=b.sex,
            )))  # fmt: skip
            out.append(self._out("context", Weight(**common, weight_kg=b.weight_kg)))
        for drug, rate, unit in (
            (Drug.NOREPINEPHRINE, e.norepinephrine_ug_kg_min, "ug/kg/min"),
            (Drug.FUROSEMIDE, e.furosemide_mg_h, "mg/h"),
        ):
            if rate != self._infusions.get(drug, 0.0):
                self._infusions[drug] = rate
                out.append(self._out("context", Infusion(
                    **common, drug=drug, rate=rate, rate_unit=unit,
                )))  # fmt: skip
        if any(s.name == "venous_congestion_aki" and s.active(t) for s in self.scenarios):
            pattern = renal_venous_doppler_pattern(e.congestion)
            if pattern != self._rvd_pattern:
                self._rvd_pattern = pattern
                out.append(self._out("context", RenalVenousDoppler(
                    **common, pattern=pattern,
                    ivc_diameter_cm=round(1.4 + 1.0 * e.congestion, 1),
                )))  # fmt: skip
        else:
            self._rvd_pattern = None  # charted again at the next congestion work-up
        if t > 0 and t % 3600 == 0:
            period_start = at - timedelta(hours=1)
            out.append(self._out("context", UrineOutput(
                **common, volume_ml=round(p.urine_ml), period_start=period_start,
            )))  # fmt: skip
            out.append(self._out("context", FluidBalanceEntry(
                **common, direction="in", volume_ml=round(p.fluid_in_ml), route="iv",
            )))  # fmt: skip
            p.urine_ml = p.fluid_in_ml = 0.0
        if t % GCS_EVERY_S == self._gcs_phase or (
            t % GCS_ACTIVE_EVERY_S == self._gcs_phase
            and any(s.name in NEURO_CHECK_SCENARIOS and s.active(t) for s in self.scenarios)
        ):
            total = gcs_total(b, e)
            deficit = 15 - total  # verbal goes first, then eye opening, then motor
            verbal = 5 - min(4, deficit)
            eye = 4 - min(3, deficit - (5 - verbal))
            motor = total - verbal - eye
            out.append(self._out("context", Gcs(
                **common, total=total, eye=eye, verbal=verbal, motor=motor,
            )))  # fmt: skip
        return out
