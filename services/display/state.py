"""What the central station shows, kept from the topics: pure, no Kafka, no clock.

``UnitState`` is fed decoded messages (admissions, feature snapshots, risk scores,
alert events, acknowledgements) and answers the page's questions: one tile per
bed, the active alarm list in priority-then-time order, a patient's trends and
alert history. It remembers which beds and whether the alarm list changed since
the last :meth:`UnitState.take_changes`, so the web layer sends one coalesced
update per tick with only the changed tiles (200 beds do not re-render per message).

Memory is bounded: per patient one trend point per minute for 24 h, per alert at
most ``MAX_EVENTS_PER_ALERT`` events, ended alerts for 24 h of event time.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
>>> unit = UnitState()
>>> unit.apply_alert(make_alert("a1", "p1", "medium", t))
True
>>> unit.apply_alert(make_alert("a2", "p2", "high", t))
True
>>> [a["alert_id"] for a in unit.alarm_list()]
['a2', 'a1']
>>> beds, alarms_changed = unit.take_changes()
>>> sorted(beds), alarms_changed
(['p1', 'p2'], True)
>>> unit.take_changes()
(set(), False)
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from schemas.alerts import AlertAck, AlertEvent, AlertPhase
from schemas.context import Admission, Discharge, Transfer
from schemas.derived import FeatureSnapshot, Organ, RiskScore

PRIORITY_RANK = {"high": 0, "medium": 1, "low": 2}
"""IEC 60601-1-8 order: high before medium before low."""

TILE_NUMBERS: tuple[tuple[str, str, str, int], ...] = (
    # key on the page, feature name, short label with unit, decimals
    ("hr", "heart_rate_per_min", "HR /min", 0),
    ("map", "map_mmhg", "MAP mmHg", 0),
    ("spo2", "spo2_pct", "SpO2 %", 0),
    ("rso2_l", "rso2_left_pct", "rSO2 L %", 0),
    ("rso2_r", "rso2_right_pct", "rSO2 R %", 0),
    ("cvp", "cvp_median_5min_mmhg", "CVP mmHg", 0),
    ("uo", "urine_output_6h_ml_kg_h", "UO mL/kg/h", 2),
    ("net_uf", "crrt_net_uf_ml_kg_h", "UF mL/kg/h", 1),
    ("lactate", "lactate_mmol_l", "Lac mmol/L", 1),
)
"""The key numbers of a bed tile (issue 6): name on the page, feature, label, decimals.

UO is urine output over the last 6 h, UF the CRRT net ultrafiltration rate, Lac
the last lactate (within 24 h); the page shows each feature's description on hover.
"""

ORGANS_SHOWN: tuple[tuple[str, str], ...] = (
    ("cardiovascular", "CV"),
    ("renal", "Ren"),
    ("congestion", "Cong"),
    ("brain", "Brain"),
    ("respiratory", "Resp"),
    ("coagulation", "Coag"),
    ("liver", "Liver"),
    ("cns", "CNS"),
)
"""The organ row of a tile, in order, with its short label."""

TREND_SERIES: tuple[tuple[str, str, str], ...] = (
    ("map_mmhg", "MAP", "mmHg"),
    ("heart_rate_per_min", "HR", "/min"),
    ("spo2_pct", "SpO2", "%"),
    ("rso2_left_pct", "rSO2 L", "%"),
    ("rso2_right_pct", "rSO2 R", "%"),
    ("cvp_median_5min_mmhg", "CVP", "mmHg"),
    ("urine_output_6h_ml_kg_h", "Urine output (6 h)", "mL/kg/h"),
    ("lactate_mmol_l", "Lactate", "mmol/L"),
    ("creatinine_mg_dl", "Creatinine", "mg/dL"),
    ("crrt_prefilter_pressure_mmhg", "CRRT pre-filter", "mmHg"),
    ("crrt_tmp_mmhg", "CRRT TMP", "mmHg"),
    ("crrt_filter_pressure_drop_mmhg", "CRRT filter drop", "mmHg"),
    ("risk", "Risk", "probability"),
)
"""The patient view's trends: feature (or ``risk``), label, unit."""

TREND_MINUTES = 24 * 60
MAX_EVENTS_PER_ALERT = 50
ENDED_KEPT = timedelta(hours=24)
MAX_SEEN_EVENT_IDS = 200_000
MAX_AUDIT = 2_000


@dataclass
class Alarm:
    """One alert as the central station sees it: its latest event plus history."""

    alert_id: str
    patient_id: str
    events: list[AlertEvent] = field(default_factory=list)
    pending_ack_by: str | None = None  # acknowledged here, not yet confirmed by the worker
    pending_ack_at: datetime | None = None

    @property
    def latest(self) -> AlertEvent:
        return self.events[-1]

    @property
    def active(self) -> bool:
        return self.latest.phase is not AlertPhase.END

    @property
    def began_at(self) -> datetime:
        return self.events[0].triggered_at

    @property
    def acknowledged_by(self) -> str | None:
        return self.latest.acknowledged_by or self.pending_ack_by

    def sort_key(self) -> tuple[int, float]:
        """Priority first, then the most recent first."""
        return PRIORITY_RANK[self.latest.priority.value], -self.began_at.timestamp()

    def badge(self) -> dict[str, Any]:
        """What a bed tile shows of its highest alarm."""
        last = self.latest
        return {
            "alert_id": self.alert_id,
            "priority": last.priority.value,
            "kind": last.kind,
            "title": last.title,
            "acknowledged_by": self.acknowledged_by,
        }

    def view(self) -> dict[str, Any]:
        """The alarm list row (JSON-ready)."""
        last = self.latest
        confirmed = last.acknowledged_by is not None
        return {
            "alert_id": self.alert_id,
            "patient_id": self.patient_id,
            "bed": last.bed,
            "care_unit": last.care_unit,
            "priority": last.priority.value,
            "kind": last.kind,
            "rule_id": last.rule_id,
            "rule_version": last.rule_version,
            "title": last.title,
            "phase": last.phase.value,
            "reason": last.reason.value if last.reason else None,
            "latched": last.latched,
            "began_at": _iso(self.began_at),
            "triggered_at": _iso(last.triggered_at),
            "raised_at": _iso(last.raised_at),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": _iso(last.acknowledged_at or self.pending_ack_at),
            "ack_confirmed": confirmed,
            "silenced_until": _iso(last.silenced_until),
            "values": {k: v for k, v in last.values.items() if k in last.thresholds},
            "thresholds": dict(last.thresholds),
        }

    @property
    def fired_by(self) -> AlertEvent:
        """The event that raised it to its current level (the last start or escalate)."""
        firing = (AlertPhase.START, AlertPhase.ESCALATE)
        return next((e for e in reversed(self.events) if e.phase in firing), self.events[0])

    def detail(self) -> dict[str, Any]:
        """The alarm with *why* it fired (the firing event's trace) and every event."""
        fired = self.fired_by
        return self.view() | {
            "fired_phase": fired.phase.value,
            "fired_at": _iso(fired.triggered_at),
            "all_values": dict(fired.values),
            "fired_thresholds": dict(fired.thresholds),
            "explanation": list(fired.explanation),
            "latest_explanation": list(self.latest.explanation),
            "source": fired.source,
            "condition_since": _iso(fired.condition_since),
            "events": [
                {
                    "phase": e.phase.value,
                    "reason": e.reason.value if e.reason else None,
                    "priority": e.priority.value,
                    "triggered_at": _iso(e.triggered_at),
                    "raised_at": _iso(e.raised_at),
                    "acknowledged_by": e.acknowledged_by,
                    "values": dict(e.values),
                    "thresholds": dict(e.thresholds),
                    "explanation": list(e.explanation),
                }
                for e in self.events
            ],
        }


@dataclass
class Bed:
    """One patient's latest numbers, organ states, risk and per-minute trends."""

    patient_id: str
    bed: str | None = None
    care_unit: str | None = None
    site: str | None = None
    discharged: bool = False
    snapshot: FeatureSnapshot | None = None
    risks: dict[str, RiskScore] = field(default_factory=dict)  # newest per outcome
    trend: OrderedDict[int, dict[str, float | None]] = field(default_factory=OrderedDict)

    @property
    def risk(self) -> RiskScore | None:
        """The highest current risk over the outcomes the risk agent predicts."""
        return max(self.risks.values(), key=lambda r: r.probability, default=None)

    def record_trend(self, at: datetime, values: dict[str, float | None]) -> None:
        """Keep the last value per minute of event time for 24 h."""
        minute = int(at.timestamp() // 60)
        point = self.trend.get(minute)
        if point is None:
            if self.trend and minute < next(reversed(self.trend)):
                # out of order (a read-back overlapping live data): insert in place
                self.trend[minute] = dict(values)
                self.trend = OrderedDict(sorted(self.trend.items()))
            else:
                self.trend[minute] = dict(values)
        else:
            point.update(values)
        newest = next(reversed(self.trend))
        while self.trend and next(iter(self.trend)) <= newest - TREND_MINUTES:
            self.trend.popitem(last=False)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _natural(label: str) -> tuple[Any, ...]:
    """Sort ICU1-2 before ICU1-10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", label))


class UnitState:
    """Everything the central station shows, fed by decoded topic messages."""

    def __init__(self) -> None:
        self.beds: dict[str, Bed] = {}
        self.alarms: dict[str, Alarm] = {}
        self._alarms_of: dict[str, set[str]] = {}  # patient id -> alert ids
        self.audit: deque[AlertAck] = deque(maxlen=MAX_AUDIT)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dirty_beds: set[str] = set()
        self._alarms_dirty = False

    # ---- feeding ------------------------------------------------------------------

    def _bed(self, patient_id: str) -> Bed:
        bed = self.beds.get(patient_id)
        if bed is None:
            bed = self.beds[patient_id] = Bed(patient_id)
        return bed

    def apply_context(self, event: object) -> bool:
        """Admission, transfer, discharge place the patient; other context is ignored."""
        if isinstance(event, Admission | Transfer):
            bed = self._bed(event.patient_id)
            bed.bed = event.bed or bed.bed
            bed.care_unit = event.care_unit or bed.care_unit
            bed.site = event.site or bed.site
            bed.discharged = False
        elif isinstance(event, Discharge):
            self._bed(event.patient_id).discharged = True
        else:
            return False
        self._dirty_beds.add(event.patient_id)
        return True

    def apply_features(self, snapshot: FeatureSnapshot) -> bool:
        bed = self._bed(snapshot.patient_id)
        if bed.snapshot is not None and snapshot.computed_at < bed.snapshot.computed_at:
            self._record(bed, snapshot)  # older (read-back): only the trend learns from it
            return False
        bed.snapshot = snapshot
        self._record(bed, snapshot)
        self._dirty_beds.add(snapshot.patient_id)
        return True

    @staticmethod
    def _record(bed: Bed, snapshot: FeatureSnapshot) -> None:
        values = {
            name: snapshot.features[name].value
            for name, _label, _unit in TREND_SERIES
            if name in snapshot.features
        }
        bed.record_trend(snapshot.computed_at, values)

    def record_trend(self, patient_id: str, at: datetime, values: dict[str, float | None]) -> None:
        """A trend point only (a read-back snapshot that is not the newest)."""
        self._bed(patient_id).record_trend(at, values)

    def apply_risk(self, risk: RiskScore) -> bool:
        """A risk score; with several outcomes the tile and trend show the highest."""
        bed = self._bed(risk.patient_id)
        known = bed.risks.get(risk.outcome)
        if known is not None and risk.computed_at < known.computed_at:
            return False
        bed.risks[risk.outcome] = risk
        highest = bed.risk
        assert highest is not None
        bed.record_trend(risk.computed_at, {"risk": highest.probability})
        self._dirty_beds.add(risk.patient_id)
        return True

    def apply_alert(self, event: AlertEvent) -> bool:
        """One alert event; duplicates (same ``event_id``) are dropped."""
        if event.event_id in self._seen:
            return False
        self._seen[event.event_id] = None
        if len(self._seen) > MAX_SEEN_EVENT_IDS:
            self._seen.popitem(last=False)
        alarm = self.alarms.get(event.alert_id)
        if alarm is None:
            alarm = self.alarms[event.alert_id] = Alarm(event.alert_id, event.patient_id)
            self._alarms_of.setdefault(event.patient_id, set()).add(event.alert_id)
        alarm.events.append(event)
        alarm.events.sort(key=lambda e: e.sequence)
        if len(alarm.events) > MAX_EVENTS_PER_ALERT:
            del alarm.events[1:2]  # keep the start event and the latest ones
        if event.acknowledged_by is not None:
            alarm.pending_ack_by = alarm.pending_ack_at = None
        bed = self._bed(event.patient_id)
        bed.bed = bed.bed or event.bed
        bed.care_unit = bed.care_unit or event.care_unit
        self._forget_old_alarms(event.triggered_at)
        self._dirty_beds.add(event.patient_id)
        self._alarms_dirty = True
        return True

    def apply_ack(self, ack: AlertAck) -> bool:
        """An acknowledgement seen on alerts.ack (any station): audit it, show it at once."""
        if any(a.ack_id == ack.ack_id for a in self.audit):
            return False
        self.audit.append(ack)
        alarm = self.alarms.get(ack.alert_id)
        if (
            ack.action == "acknowledge"
            and alarm is not None
            and alarm.active
            and alarm.latest.acknowledged_by is None
        ):
            alarm.pending_ack_by, alarm.pending_ack_at = ack.user, ack.at
            self._alarms_dirty = True
            self._dirty_beds.add(alarm.patient_id)
        return True

    def _forget_old_alarms(self, now: datetime) -> None:
        old = [
            k
            for k, a in self.alarms.items()
            if not a.active and a.latest.triggered_at < now - ENDED_KEPT
        ]
        for key in old:
            alarm = self.alarms.pop(key)
            self._alarms_of[alarm.patient_id].discard(key)

    def take_changes(self) -> tuple[set[str], bool]:
        """(beds whose tile changed, whether the alarm list changed) since the last call."""
        beds, alarms = self._dirty_beds, self._alarms_dirty
        self._dirty_beds, self._alarms_dirty = set(), False
        return beds, alarms

    # ---- reading ------------------------------------------------------------------

    def active_alarms(self, patient_id: str | None = None) -> list[Alarm]:
        """Active alarms (of one patient, or all), in the alarm list's order."""
        if patient_id is None:
            candidates: Iterable[Alarm] = self.alarms.values()
        else:
            candidates = (self.alarms[k] for k in self._alarms_of.get(patient_id, ()))
        return sorted((a for a in candidates if a.active), key=Alarm.sort_key)

    def alarm_list(self) -> list[dict[str, Any]]:
        """Active alarms, high before medium before low, newest first within a priority.

        The bed and unit come from ADT (the patient may have moved since the alert).
        """
        rows = []
        for alarm in self.active_alarms():
            row = alarm.view()
            bed = self.beds.get(alarm.patient_id)
            if bed is not None:
                row["bed"] = bed.bed or row["bed"]
                row["care_unit"] = bed.care_unit or alarm.latest.care_unit
            rows.append(row)
        return rows

    def bed_order(self) -> list[str]:
        shown = [b for b in self.beds.values() if not b.discharged]
        return [b.patient_id for b in sorted(shown, key=lambda b: _natural(b.bed or b.patient_id))]

    def tile(self, patient_id: str) -> dict[str, Any]:
        """One bed's tile (JSON-ready); unknown values are None, never 0."""
        bed = self._bed(patient_id)
        snap = bed.snapshot
        numbers: dict[str, float | None] = {}
        for key, feature, _label, decimals in TILE_NUMBERS:
            value = snap.features[feature].value if snap and feature in snap.features else None
            numbers[key] = None if value is None else round(value, decimals)
        organs: dict[str, dict[str, Any]] = {}
        for organ, _label in ORGANS_SHOWN:
            state = snap.organs.get(Organ(organ)) if snap else None
            organs[organ] = (
                {"status": "unknown", "subscore": None, "reason": "no data yet"}
                if state is None
                else {"status": state.status, "subscore": state.subscore, "reason": state.reason}
            )
        completeness = dict(snap.completeness) if snap else {}
        top = self.active_alarms(patient_id)
        risk = bed.risk
        return {
            "patient_id": patient_id,
            "bed": bed.bed or patient_id,
            "care_unit": bed.care_unit,
            "discharged": bed.discharged,
            "computed_at": _iso(snap.computed_at) if snap else None,
            "numbers": numbers,
            "risk": None if risk is None else round(risk.probability, 2),
            "risk_outcome": None if risk is None else risk.outcome,
            "organs": organs,
            "sofa_total": snap.sofa_total if snap else None,
            "completeness": completeness,
            "completeness_pct": (
                round(100 * sum(completeness.values()) / len(completeness))
                if completeness
                else None
            ),
            "alarm": top[0].badge() if top else None,
            "alarm_count": len(top),
        }

    def tiles(self, patient_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {pid: self.tile(pid) for pid in patient_ids}

    def overview(self) -> dict[str, Any]:
        """Everything a newly connected overview needs."""
        order = self.bed_order()
        return {"order": order, "beds": self.tiles(order), "alarms": self.alarm_list()}

    def patient_detail(self, patient_id: str, hours: float) -> dict[str, Any] | None:
        """Trends for the last ``hours`` (of the patient's event time), alerts and why."""
        bed = self.beds.get(patient_id)
        if bed is None:
            return None
        newest = next(reversed(bed.trend)) if bed.trend else None
        first = None if newest is None else newest - int(hours * 60)
        points = [(m, v) for m, v in bed.trend.items() if first is not None and m > first]
        series = {
            name: {
                "label": label,
                "unit": unit,
                "points": [[m * 60, v[name]] for m, v in points if name in v],
            }
            for name, label, unit in TREND_SERIES
        }
        alarms = sorted(
            (self.alarms[k] for k in self._alarms_of.get(patient_id, ())),
            key=lambda a: a.began_at,
            reverse=True,
        )
        risk = bed.risk
        return {
            "tile": self.tile(patient_id),
            "window": {
                "from": None if first is None else first * 60,
                "to": None if newest is None else (newest + 1) * 60,
            },
            "series": series,
            "alerts": [a.detail() for a in alarms],
            "features": (
                {
                    name: {"value": f.value, "unit": f.unit, "age_s": f.age_s}
                    for name, f in sorted(bed.snapshot.features.items())
                }
                if bed.snapshot
                else {}
            ),
            "risk": None
            if risk is None
            else {
                "probability": risk.probability,
                "outcome": risk.outcome,
                "horizon_h": risk.horizon_h,
                "model": f"{risk.model_id} {risk.model_version}",
                "cold_start": risk.cold_start,
                "computed_at": _iso(risk.computed_at),
                "per_organ": {str(k): v for k, v in risk.per_organ.items()},
                "other_outcomes": {
                    r.outcome: r.probability for r in bed.risks.values() if r is not risk
                },
                "contributions": [
                    {"feature": c.feature, "value": c.value, "contribution": c.contribution}
                    for c in risk.top_contributions
                ],
            },
        }


def make_alert(
    alert_id: str,
    patient_id: str,
    priority: str,
    at: datetime,
    *,
    phase: str = "start",
    sequence: int = 0,
    kind: str = "physiological",
    acknowledged_by: str | None = None,
) -> AlertEvent:
    """A realistic alert event for examples and tests (MAP below 65 mmHg)."""
    return AlertEvent.model_validate(
        {
            "event_id": f"{alert_id}-{sequence}",
            "alert_id": alert_id,
            "sequence": sequence,
            "patient_id": patient_id,
            "bed": f"ICU1-{patient_id}",
            "phase": phase,
            "priority": priority,
            "kind": kind,
            "rule_id": "perfusion.map_low",
            "rule_version": 1,
            "title": "MAP below 65 mmHg",
            "values": {"map_median_1min_mmhg": 58.0},
            "thresholds": {"map_median_1min_mmhg": 65.0},
            "condition_since": at - timedelta(minutes=5),
            "triggered_at": at,
            "raised_at": at,
            "explanation": ("1-min median MAP 58 < 65 mmHg for 5 min",),
            "source": "CLINICAL.md Perfusion",
            "acknowledged_by": acknowledged_by,
            "acknowledged_at": at if acknowledged_by else None,
        }
    )
