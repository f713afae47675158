"""Per-patient vital-sign monitoring: rolling features and threshold alarms, in event time.

This is the pure core the faust agent calls: ``PatientMonitor.on_vitals`` takes a
decoded sample and returns the alert events it causes; no Kafka, no wall clock
(``raised_at`` is passed in).

Which MAP: the continuous invasive arterial mean (ABP). Cuff (NBP) readings come
every 5-15 min, so a 1-min median of them is no continuous evidence: a patient
with only NBP is *not evaluated* by this rule (an intermittent-NBP rule and a
"not evaluable" technical alarm belong to the alarm engine issue).

Late and out-of-order policy, per patient and per feature input: an ABP mean whose
observation time is not after the last one used is *late*. It is counted and not
fed into the window or the rules (re-deliveries after a restart are exactly such
samples, so they change nothing). Other messages of the same second (a gateway
sending HR/SpO2 and ABP separately) are not affected.

Gap policy: when the time since the previous ABP mean reaches the median window,
the rule is first evaluated as *unknown*: a pending alarm is not confirmed across
a gap and an active alarm is not cleared by missing data.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.alerts import AlertEvent, AlertPhase
from schemas.codes import Quantity
from schemas.observations import VitalSigns
from streams.alarm import AlarmState, Transition, step
from streams.rolling import RollingMedian
from streams.rules import RuleSet, ThresholdRule

MAP_MEDIAN_WINDOW_S = 60.0
"""1-min median of MAP (CLINICAL.md Perfusion: "the 1-min median stays below 65")."""

ALERT_NAMESPACE = uuid.UUID("6f1d3c52-9a57-4d0e-8a43-5b0f6c1e2a90")
"""uuid5 namespace of Vigil alert ids: same patient, rule and episode -> same id."""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def alert_id_for(patient_id: str, rule: ThresholdRule, condition_since: float) -> str:
    """Deterministic alert id of one episode of one rule for one patient.

    The rule version is not part of it, so an episode that spans a rules update
    keeps its id (its events carry the version in force when each was emitted).

    >>> from streams.rules import load_rules
    >>> rule = load_rules().get("perfusion.map_low")
    >>> alert_id_for("p1", rule, 0.0) == alert_id_for("p1", rule, 0.0)
    True
    >>> alert_id_for("p1", rule, 0.0) == alert_id_for("p1", rule, 1.0)
    False
    """
    name = f"{patient_id}|{rule.id}|{_iso(condition_since)}"
    return str(uuid.uuid5(ALERT_NAMESPACE, name))


@dataclass(frozen=True)
class AlertDraft:
    """Everything of an alert event except the wall-clock time it is raised."""

    patient_id: str
    bed: str | None
    care_unit: str | None
    rule: ThresholdRule
    transition: Transition
    values: dict[str, float | None]
    trigger_received_at: datetime

    def to_event(self, raised_at: datetime) -> AlertEvent:
        rule, tr = self.rule, self.transition
        alert_id = alert_id_for(self.patient_id, rule, tr.condition_since)
        value = self.values.get(rule.feature)
        shown = "unknown" if value is None else f"{value:.1f}"
        if tr.phase == "start":
            phase = AlertPhase.START
            explanation = (
                f"{rule.feature} {shown} {rule.comparator} {rule.threshold:g}"
                f" since {_iso(tr.condition_since)}",
                f"held {tr.at - tr.condition_since:.0f} s >= on-delay {rule.on_delay_s:g} s",
            )
        else:
            phase = AlertPhase.END
            back = ">=" if rule.direction == "below" else "<="
            bound = rule.threshold + (
                rule.hysteresis if rule.direction == "below" else -rule.hysteresis
            )
            explanation = (
                f"{rule.feature} {shown} {back} {bound:g} for off-delay {rule.off_delay_s:g} s",
                f"condition began {_iso(tr.condition_since)}",
            )
        return AlertEvent(
            event_id=str(uuid.uuid5(ALERT_NAMESPACE, f"{alert_id}|{tr.sequence}|{phase.value}")),
            alert_id=alert_id,
            sequence=tr.sequence,
            patient_id=self.patient_id,
            bed=self.bed,
            care_unit=self.care_unit,
            phase=phase,
            priority=rule.priority,
            kind=rule.kind,
            rule_id=rule.id,
            rule_version=rule.version,
            title=rule.title,
            values=self.values,
            thresholds={rule.feature: rule.threshold},
            condition_since=datetime.fromtimestamp(tr.condition_since, UTC),
            triggered_at=datetime.fromtimestamp(tr.at, UTC),
            raised_at=raised_at,
            trigger_received_at=self.trigger_received_at,
            explanation=(*explanation, f"rule {rule.id} v{rule.version}: {rule.source}"),
            source=rule.source[:256],
        )


def arterial_map_of(sample: VitalSigns) -> tuple[float, float] | None:
    """(MAP mmHg, observation time) of the sample's invasive arterial mean, if any."""
    found = sample.latest(Quantity.ABP_MEAN)
    if found is None or found.value is None:
        return None
    return found.value, found.observed_at.timestamp()


@dataclass
class PatientMonitor:
    """Rolling features and alarm states of one patient."""

    map_median: RollingMedian = field(default_factory=lambda: RollingMedian(MAP_MEDIAN_WINDOW_S))
    alarms: dict[str, AlarmState] = field(default_factory=dict)
    last_map_at: float | None = None
    bed: str | None = None
    care_unit: str | None = None
    late_samples: int = 0

    def on_vitals(self, sample: VitalSigns, rules: RuleSet) -> list[AlertDraft]:
        """Feed one vitals message; returns the alert events it causes (maybe none)."""
        self.bed = sample.bed or self.bed
        self.care_unit = sample.care_unit or self.care_unit
        arterial = arterial_map_of(sample)
        if arterial is None:
            return []
        map_mmhg, at = arterial
        if self.last_map_at is not None and at <= self.last_map_at:
            self.late_samples += 1
            return []
        drafts: list[AlertDraft] = []
        if self.last_map_at is not None and at - self.last_map_at >= MAP_MEDIAN_WINDOW_S:
            drafts += self._evaluate(sample, rules, at, None, map_mmhg)
        self.last_map_at = at
        self.map_median.update(at, map_mmhg)
        drafts += self._evaluate(sample, rules, at, self.map_median.get(), map_mmhg)
        return drafts

    def _evaluate(
        self,
        sample: VitalSigns,
        rules: RuleSet,
        at: float,
        map_median: float | None,
        map_mmhg: float,
    ) -> list[AlertDraft]:
        features = {"map_median_1min_mmhg": map_median}
        drafts = []
        for rule in rules.rule:
            value = features[rule.feature]
            state, transition = step(
                self.alarms.get(rule.id, AlarmState()),
                rule.timing,
                at=at,
                onset=rule.onset(value),
                resolved=rule.resolved(value),
            )
            self.alarms[rule.id] = state
            if transition is not None:
                drafts.append(
                    AlertDraft(
                        patient_id=sample.patient_id,
                        bed=self.bed,
                        care_unit=self.care_unit,
                        rule=rule,
                        transition=transition,
                        values={rule.feature: value, "map_mmhg": map_mmhg},
                        trigger_received_at=sample.received_at,
                    )
                )
        return drafts

    def to_state(self) -> dict[str, Any]:
        return {
            "map_median": self.map_median.to_state(),
            "alarms": {k: v.to_state() for k, v in self.alarms.items()},
            "last_map_at": self.last_map_at,
            "bed": self.bed,
            "care_unit": self.care_unit,
            "late_samples": self.late_samples,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PatientMonitor:
        return cls(
            map_median=RollingMedian.from_state(state["map_median"]),
            alarms={k: AlarmState.from_state(v) for k, v in state["alarms"].items()},
            last_map_at=state["last_map_at"],
            bed=state["bed"],
            care_unit=state["care_unit"],
            late_samples=int(state["late_samples"]),
        )
