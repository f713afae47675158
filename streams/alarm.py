"""The alarm engine: per (patient, rule) state machines in event time, and alert drafts.

Pure core (no Kafka, no wall clock). Per rule (DESIGN.md "Alarm model"):

    inactive -> pending  (condition true, waiting its on-delay)
    pending  -> active   (held through the on-delay: emit ``start``)
    pending  -> escalated (a worse band held through its own on-delay first: ``start``
                          directly at the escalated priority)
    active   -> escalated (still active after ``after_s``, or the worse band held:
                          emit ``escalate``)
    active/escalated -> clearing (the clear condition holds: thresholds moved by their
                          hysteresis to the safe side)
    clearing -> inactive (held through the off-delay: emit ``end``), or back to
                          active/escalated as soon as it does not hold
    clearing -> latched  (latching rule not acknowledged: emit ``update``; shown
                          until acknowledged, then ``end``)

Unknown data (Kleene ``None``): a pending alarm goes back to inactive (brief
crossings and gaps never raise); an active alarm stays active (missing data never
clears an alarm); a clearing alarm goes back to active (the clear condition must
hold, known, through the whole off-delay). Escalation is kept until the episode
ends (no de-escalation flapping).

Acknowledgements never end or hide an alarm: ``acknowledge`` pauses reminders until
the alarm escalates, ``silence`` until ``silence_until`` (or, without one, like an
acknowledgement), ``unsilence`` lifts a silence. Latching and acknowledgement: an
alarm acknowledged in its current priority ends at the off-delay like any other (the
team has seen it); one never acknowledged latches, and ends when acknowledged.

>>> from streams.rules import load_rules
>>> rules = load_rules()
>>> bed = PatientAlarms()
>>> ctx = AlertContext("MRN-1", bed="ICU1-07")
>>> [bed.evaluate(t, {"map_median_1min_mmhg": 61.0}, rules, ctx) for t in (0.0, 299.0)]
[[], []]
>>> [(d.phase.value, d.priority.value, d.rule_id) for d in
...  bed.evaluate(300.0, {"map_median_1min_mmhg": 61.0}, rules, ctx)]
[('start', 'medium', 'perfusion.map_low')]
>>> [(a.rule_id, a.phase.value) for a in bed.active()]
[('perfusion.map_low', 'active')]
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from schemas.alerts import AlertAck, AlertEvent, AlertPhase, AlertPriority, AlertReason
from streams.rules import PRIORITY_RANK, Features, Rule, RuleSet

ALERT_NAMESPACE = uuid.UUID("6f1d3c52-9a57-4d0e-8a43-5b0f6c1e2a90")
"""uuid5 namespace of Vigil alert and event ids."""

STATE_VERSION = 1
"""Version of the ``to_state`` layout (faust table values)."""

MAX_ACK_IDS = 32
"""Ack ids remembered per alert, to drop re-delivered acks (at-least-once)."""


class AlarmPhase(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    ACTIVE = "active"
    ESCALATED = "escalated"
    CLEARING = "clearing"
    LATCHED = "latched"


_SHOWN = (AlarmPhase.ACTIVE, AlarmPhase.ESCALATED, AlarmPhase.CLEARING, AlarmPhase.LATCHED)
_REMINDED = (AlarmPhase.ACTIVE, AlarmPhase.ESCALATED, AlarmPhase.LATCHED)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def alert_id_for(patient_id: str, rule_id: str, condition_since: float) -> str:
    """Deterministic alert id of one episode of one rule for one patient.

    The rule version is not part of it: an episode spanning a rules update keeps its
    id (each event carries the version in force when it was emitted).

    >>> alert_id_for("p1", "perfusion.map_low", 0.0) == alert_id_for("p1", "perfusion.map_low", 0)
    True
    >>> alert_id_for("p1", "perfusion.map_low", 0.0) == alert_id_for("p1", "perfusion.map_low", 1)
    False
    """
    name = f"{patient_id}|{rule_id}|{_iso(condition_since)}"
    return str(uuid.uuid5(ALERT_NAMESPACE, name))


def event_id_for(alert_id: str, sequence: int, phase: AlertPhase, ack_id: str | None = None) -> str:
    """Deterministic event id; an acknowledgement's event derives from its ``ack_id``."""
    name = f"{alert_id}|ack|{ack_id}" if ack_id is not None else f"{alert_id}|{sequence}|{phase}"
    return str(uuid.uuid5(ALERT_NAMESPACE, name))


@dataclass(frozen=True)
class AlertContext:
    """Who and where: not part of the alarm state."""

    patient_id: str
    bed: str | None = None
    care_unit: str | None = None
    site: str | None = None
    trigger_received_at: datetime | None = None  # wall-clock receive time of the trigger


@dataclass(frozen=True)
class AlertDraft:
    """Everything of an alert event except the wall-clock time it is raised."""

    event_id: str
    alert_id: str
    sequence: int
    phase: AlertPhase
    reason: AlertReason
    priority: AlertPriority
    kind: Literal["physiological", "technical"]
    rule_id: str
    rule_version: int
    title: str
    source: str
    values: dict[str, float | None]
    thresholds: dict[str, float]
    condition_since: float
    triggered_at: float
    explanation: tuple[str, ...]
    context: AlertContext
    latched: bool = False
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    silenced_until: float | None = None

    def to_event(self, raised_at: datetime) -> AlertEvent:
        """The alert event, raised at ``raised_at`` (the only wall-clock field)."""
        ctx = self.context
        return AlertEvent(
            event_id=self.event_id,
            alert_id=self.alert_id,
            sequence=self.sequence,
            patient_id=ctx.patient_id,
            bed=ctx.bed,
            care_unit=ctx.care_unit,
            site=ctx.site,
            phase=self.phase,
            priority=self.priority,
            kind=self.kind,
            rule_id=self.rule_id,
            rule_version=self.rule_version,
            title=self.title,
            values=self.values,
            thresholds=self.thresholds,
            condition_since=_dt(self.condition_since),
            triggered_at=_dt(self.triggered_at),
            raised_at=raised_at,
            trigger_received_at=ctx.trigger_received_at,
            explanation=self.explanation,
            source=self.source,
            reason=self.reason,
            latched=self.latched,
            acknowledged_by=self.acknowledged_by,
            acknowledged_at=None if self.acknowledged_at is None else _dt(self.acknowledged_at),
            silenced_until=None if self.silenced_until is None else _dt(self.silenced_until),
        )


@dataclass(frozen=True)
class ActiveAlarm:
    """An alarm being shown (active, escalated, clearing or latched)."""

    alert_id: str
    rule_id: str
    priority: AlertPriority
    phase: AlarmPhase
    condition_since: float
    acknowledged_by: str | None
    silenced_until: float | None


AckStatus = Literal["applied", "unknown_alert", "duplicate", "not_permitted"]


@dataclass(frozen=True)
class AckOutcome:
    """What an acknowledgement did: ``applied`` with its events, or why nothing."""

    status: AckStatus
    drafts: tuple[AlertDraft, ...] = ()

    @property
    def applied(self) -> bool:
        return self.status == "applied"


@dataclass
class _Alarm:
    """Mutable state of one (patient, rule) alarm; JSON-able through ``to_state``."""

    phase: AlarmPhase
    condition_since: float
    alert_id: str | None = None
    band_since: float | None = None
    active_since: float | None = None
    clearing_since: float | None = None
    escalated: bool = False
    sequence: int = 0  # sequence of the next event
    last_announced_at: float | None = None
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    silenced_until: float | None = None
    ack_ids: list[str] = field(default_factory=list)
    # the rule as last evaluated, to end or acknowledge it once the rule is gone
    rule_version: int = 1
    title: str = ""
    kind: Literal["physiological", "technical"] = "physiological"
    source: str = ""
    priority: AlertPriority = AlertPriority.LOW
    values: dict[str, float | None] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "condition_since": self.condition_since,
            "alert_id": self.alert_id,
            "band_since": self.band_since,
            "active_since": self.active_since,
            "clearing_since": self.clearing_since,
            "escalated": self.escalated,
            "sequence": self.sequence,
            "last_announced_at": self.last_announced_at,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at,
            "silenced_until": self.silenced_until,
            "ack_ids": list(self.ack_ids),
            "rule_version": self.rule_version,
            "title": self.title,
            "kind": self.kind,
            "source": self.source,
            "priority": self.priority.value,
            "values": dict(self.values),
            "thresholds": dict(self.thresholds),
        }

    @classmethod
    def from_state(cls, s: Mapping[str, Any]) -> _Alarm:
        kind: Literal["physiological", "technical"] = (
            "technical" if s["kind"] == "technical" else "physiological"
        )
        return cls(
            phase=AlarmPhase(s["phase"]),
            condition_since=float(s["condition_since"]),
            alert_id=s["alert_id"],
            band_since=s["band_since"],
            active_since=s["active_since"],
            clearing_since=s["clearing_since"],
            escalated=bool(s["escalated"]),
            sequence=int(s["sequence"]),
            last_announced_at=s["last_announced_at"],
            acknowledged_by=s["acknowledged_by"],
            acknowledged_at=s["acknowledged_at"],
            silenced_until=s["silenced_until"],
            ack_ids=list(s["ack_ids"]),
            rule_version=int(s["rule_version"]),
            title=s["title"],
            kind=kind,
            source=s["source"],
            priority=AlertPriority(s["priority"]),
            values=dict(s["values"]),
            thresholds={k: float(v) for k, v in s["thresholds"].items()},
        )

    def remember(self, rule: Rule, features: Features) -> None:
        """Keep the rule in force and the values it names (for events without a rule)."""
        self.rule_version = rule.version
        self.title = rule.title
        self.kind = rule.kind
        self.source = rule.source
        esc = rule.escalation
        self.priority = esc.priority if self.escalated and esc is not None else rule.priority
        self.values = {name: features.get(name) for name in rule.feature_names}
        self.thresholds = dict(rule.thresholds)


def _source_line(rule_id: str, version: int, source: str) -> str:
    return f"rule {rule_id} v{version}; source: {source}"


class PatientAlarms:
    """The alarms of one patient: every rule's state machine, in event time.

    ``evaluate`` is called with the patient's *whole* current feature snapshot at
    event time ``at_s`` (a feature left out is unknown: it resets pending alarms on
    it). Evaluations must not go back in time: an earlier ``at_s`` than the last one
    is ignored and counted in ``stale_evaluations``. Rules changing between calls: a
    rule removed or disabled ends its shown alarm (``rule_removed``) and drops a
    pending one; a new version keeps the episode and alert id, and events carry the
    version in force (an escalated alarm whose new version has no escalation goes
    back to the rule's priority).
    """

    def __init__(self) -> None:
        self._alarms: dict[str, _Alarm] = {}
        self.last_at: float | None = None
        self.stale_evaluations = 0

    # --- evaluation ----------------------------------------------------------------

    @property
    def has_alarms(self) -> bool:
        """Whether any alarm is pending, shown or latched (time alone can change it)."""
        return bool(self._alarms)

    def evaluate(
        self,
        at_s: float,
        features: Features,
        rules: RuleSet,
        context: AlertContext,
        only: frozenset[str] | None = None,
    ) -> list[AlertDraft]:
        """Advance every rule (or the rule ids in ``only``) to event time ``at_s``.

        Returns the events it causes. ``only`` lets the caller evaluate just the rules
        a new record can affect; the others keep their state untouched.
        """
        if self.last_at is not None and at_s < self.last_at:
            self.stale_evaluations += 1
            return []
        self.last_at = at_s
        drafts: list[AlertDraft] = []
        for rule_id in sorted(self._alarms.keys() - rules.enabled_ids):
            alarm = self._alarms.pop(rule_id)
            if alarm.phase in _SHOWN:
                why = (
                    f"rule {rule_id} was removed from the rules file or disabled: its alarm ends",
                    _source_line(rule_id, alarm.rule_version, alarm.source),
                )
                drafts.append(
                    self._emit(
                        alarm, rule_id, AlertPhase.END, AlertReason.RULE_REMOVED, at_s, why, context
                    )
                )
        for rule in rules.enabled:
            if only is None or rule.id in only:
                drafts += self._step(rule, rules, at_s, features, context)
        return drafts

    def _step(
        self, rule: Rule, rules: RuleSet, at: float, features: Features, ctx: AlertContext
    ) -> list[AlertDraft]:
        alarm = self._alarms.get(rule.id)
        onset = rule.onset(features)
        if alarm is None:
            if onset is not True:
                return []
            alarm = self._alarms[rule.id] = _Alarm(AlarmPhase.PENDING, condition_since=at)
        if alarm.silenced_until is not None and at >= alarm.silenced_until:
            alarm.silenced_until = None
        esc = rule.escalation

        if alarm.phase is AlarmPhase.PENDING:
            if onset is not True:  # a brief crossing, or a gap: nothing raised
                del self._alarms[rule.id]
                return []
            self._track_band(alarm, rule, at, features)
            band_ready = self._band_ready(alarm, rule, at)
            if not band_ready and at - alarm.condition_since < rule.on_delay_s:
                return []
            alarm.escalated = band_ready
            alarm.phase = AlarmPhase.ESCALATED if band_ready else AlarmPhase.ACTIVE
            alarm.active_since = alarm.last_announced_at = at
            alarm.alert_id = alert_id_for(ctx.patient_id, rule.id, alarm.condition_since)
            alarm.remember(rule, features)
            lines = [
                f"{rule.title}: condition true since {_iso(alarm.condition_since)}",
                *rule.condition.trace(features, indent="  "),
                f"held {at - alarm.condition_since:.0f} s, on-delay {rule.on_delay_s:g} s",
            ]
            reason = AlertReason.ONSET
            if band_ready:
                reason = AlertReason.BAND
                lines += self._band_lines(alarm, rule, at, features)
            lines.append(_source_line(rule.id, rule.version, rule.source))
            return [self._emit(alarm, rule.id, AlertPhase.START, reason, at, lines, ctx)]

        alarm.remember(rule, features)
        resolved = rule.resolved(features)
        normal = AlarmPhase.ESCALATED if alarm.escalated else AlarmPhase.ACTIVE

        if alarm.phase is AlarmPhase.LATCHED:
            if onset is True:
                alarm.phase, alarm.band_since = normal, None
                alarm.clearing_since = None
                alarm.last_announced_at = at
                lines = [
                    f"{rule.title}: condition true again while latched",
                    *rule.condition.trace(features, indent="  "),
                    _source_line(rule.id, rule.version, rule.source),
                ]
                return [
                    self._emit(
                        alarm, rule.id, AlertPhase.UPDATE, AlertReason.RELAPSED, at, lines, ctx
                    )
                ]
            return self._reminder(alarm, rule, rules, at, features, ctx)

        if alarm.phase is AlarmPhase.CLEARING and resolved is not True:
            alarm.phase, alarm.clearing_since = normal, None
        elif alarm.phase is not AlarmPhase.CLEARING and resolved is True:
            alarm.phase, alarm.clearing_since, alarm.band_since = AlarmPhase.CLEARING, at, None

        if alarm.phase is AlarmPhase.CLEARING:
            assert alarm.clearing_since is not None
            held = at - alarm.clearing_since
            if held < rule.off_delay_s:
                return []
            lines = [
                f"{rule.title}: resolved (the condition with thresholds moved by their"
                " hysteresis is false)",
                *rule.condition.trace(features, cleared=True, indent="  "),
                f"resolved for {held:.0f} s, off-delay {rule.off_delay_s:g} s",
            ]
            if rule.latching and alarm.acknowledged_by is None:
                alarm.phase = AlarmPhase.LATCHED
                alarm.last_announced_at = at
                lines += [
                    "latching rule: shown until acknowledged",
                    _source_line(rule.id, rule.version, rule.source),
                ]
                return [
                    self._emit(
                        alarm, rule.id, AlertPhase.UPDATE, AlertReason.LATCHED, at, lines, ctx
                    )
                ]
            del self._alarms[rule.id]
            lines.append(_source_line(rule.id, rule.version, rule.source))
            return [
                self._emit(alarm, rule.id, AlertPhase.END, AlertReason.RESOLVED, at, lines, ctx)
            ]

        # active or escalated
        if not alarm.escalated and esc is not None:
            self._track_band(alarm, rule, at, features)
            by_band = self._band_ready(alarm, rule, at)
            assert alarm.active_since is not None
            by_time = esc.after_s is not None and at - alarm.active_since >= esc.after_s
            if by_band or by_time:
                alarm.escalated = True
                alarm.phase = AlarmPhase.ESCALATED
                alarm.acknowledged_by = alarm.acknowledged_at = alarm.silenced_until = None
                alarm.last_announced_at = at
                alarm.remember(rule, features)
                if by_band:
                    reason, why = AlertReason.BAND, self._band_lines(alarm, rule, at, features)
                else:
                    reason = AlertReason.DURATION
                    why = [
                        f"escalated to {esc.priority.value}: still active"
                        f" {at - alarm.active_since:.0f} s, escalation after {esc.after_s:g} s"
                    ]
                lines = [
                    f"{rule.title}: condition true since {_iso(alarm.condition_since)}",
                    *rule.condition.trace(features, indent="  "),
                    *why,
                    _source_line(rule.id, rule.version, rule.source),
                ]
                return [self._emit(alarm, rule.id, AlertPhase.ESCALATE, reason, at, lines, ctx)]
        return self._reminder(alarm, rule, rules, at, features, ctx)

    @staticmethod
    def _track_band(alarm: _Alarm, rule: Rule, at: float, features: Features) -> None:
        if rule.band(features) is True:
            if alarm.band_since is None:
                alarm.band_since = at
        else:
            alarm.band_since = None

    @staticmethod
    def _band_ready(alarm: _Alarm, rule: Rule, at: float) -> bool:
        esc = rule.escalation
        return (
            esc is not None
            and alarm.band_since is not None
            and at - alarm.band_since >= esc.on_delay_s
        )

    @staticmethod
    def _band_lines(alarm: _Alarm, rule: Rule, at: float, features: Features) -> list[str]:
        esc = rule.escalation
        assert esc is not None
        assert esc.condition is not None
        assert alarm.band_since is not None
        return [
            f"escalated to {esc.priority.value}: worse band held {at - alarm.band_since:.0f} s,"
            f" on-delay {esc.on_delay_s:g} s",
            *esc.condition.trace(features, indent="  "),
        ]

    def _reminder(
        self,
        alarm: _Alarm,
        rule: Rule,
        rules: RuleSet,
        at: float,
        features: Features,
        ctx: AlertContext,
    ) -> list[AlertDraft]:
        if alarm.phase not in _REMINDED or alarm.acknowledged_by is not None:
            return []
        if alarm.silenced_until is not None and at < alarm.silenced_until:
            return []
        interval = rules.reannounce_s(rule, alarm.priority)
        last = alarm.last_announced_at
        if interval <= 0 or last is None or at - last < interval:
            return []
        alarm.last_announced_at = at
        since = alarm.condition_since if alarm.active_since is None else alarm.active_since
        state = (
            "latched (resolved, not yet acknowledged)"
            if alarm.phase is AlarmPhase.LATCHED
            else f"{alarm.phase.value} since {_iso(since)}"
        )
        lines = [
            f"reminder: {rule.title} {state}, not acknowledged (every {interval:g} s)",
            *rule.condition.trace(features, indent="  "),
            _source_line(rule.id, rule.version, rule.source),
        ]
        return [self._emit(alarm, rule.id, AlertPhase.UPDATE, AlertReason.REMINDER, at, lines, ctx)]

    def _emit(
        self,
        alarm: _Alarm,
        rule_id: str,
        phase: AlertPhase,
        reason: AlertReason,
        at: float,
        explanation: list[str] | tuple[str, ...],
        ctx: AlertContext,
        ack_id: str | None = None,
    ) -> AlertDraft:
        assert alarm.alert_id is not None
        draft = AlertDraft(
            event_id=event_id_for(alarm.alert_id, alarm.sequence, phase, ack_id),
            alert_id=alarm.alert_id,
            sequence=alarm.sequence,
            phase=phase,
            reason=reason,
            priority=alarm.priority,
            kind=alarm.kind,
            rule_id=rule_id,
            rule_version=alarm.rule_version,
            title=alarm.title,
            source=alarm.source,
            values=dict(alarm.values),
            thresholds=dict(alarm.thresholds),
            condition_since=alarm.condition_since,
            triggered_at=at,
            explanation=tuple(explanation),
            context=ctx,
            latched=alarm.phase is AlarmPhase.LATCHED,
            acknowledged_by=alarm.acknowledged_by,
            acknowledged_at=alarm.acknowledged_at,
            silenced_until=alarm.silenced_until,
        )
        alarm.sequence += 1
        return draft

    def discharge(self, at: float, context: AlertContext) -> list[AlertDraft]:
        """The patient left the unit at ``at``: every shown alarm ends (``discharged``),
        pending ones are dropped, so no alarm outlives the stay on a central station."""
        drafts: list[AlertDraft] = []
        for rule_id in sorted(self._alarms):
            alarm = self._alarms.pop(rule_id)
            if alarm.phase in _SHOWN:
                why = (
                    f"the patient was discharged at {_iso(at)}: the alarm ends with the stay",
                    _source_line(rule_id, alarm.rule_version, alarm.source),
                )
                drafts.append(
                    self._emit(
                        alarm, rule_id, AlertPhase.END, AlertReason.DISCHARGED, at, why, context
                    )
                )
        return drafts

    # --- acknowledgement -----------------------------------------------------------

    def acknowledge(self, ack: AlertAck, rules: RuleSet, context: AlertContext) -> AckOutcome:
        """Apply an acknowledgement, silence or unsilence; never ends an unlatched alarm.

        Unknown or ended alert ids change nothing (``unknown_alert``); a re-delivered
        ack id changes nothing (``duplicate``); a ``viewer`` may not acknowledge
        (``not_permitted``). The alarm's rule and values are those of its last
        evaluation, so an ack works even if ``rules`` no longer has the rule (the next
        ``evaluate`` ends it); ``rules`` is taken for symmetry with ``evaluate``.
        """
        found = [
            (rule_id, a)
            for rule_id, a in self._alarms.items()
            if a.alert_id == ack.alert_id and a.phase in _SHOWN
        ]
        if not found or ack.patient_id != context.patient_id:
            return AckOutcome("unknown_alert")
        rule_id, alarm = found[0]
        if ack.ack_id in alarm.ack_ids:
            return AckOutcome("duplicate")
        if ack.role == "viewer":
            return AckOutcome("not_permitted")
        alarm.ack_ids = [*alarm.ack_ids, ack.ack_id][-MAX_ACK_IDS:]
        at = ack.at.timestamp()
        who = f"{ack.action} by {ack.user} ({ack.role}) at {_iso(at)}"
        if ack.action == "acknowledge" or (ack.action == "silence" and ack.silence_until is None):
            alarm.acknowledged_by, alarm.acknowledged_at = ack.user, at
            effect = "reminders paused until the alarm escalates"
        elif ack.action == "silence":
            assert ack.silence_until is not None
            alarm.silenced_until = ack.silence_until.timestamp()
            effect = f"reminders silenced until {_iso(alarm.silenced_until)}"
        else:
            alarm.silenced_until = None
            effect = "silence lifted: reminders resume"
        lines = [who, effect, "the alarm stays shown until its condition resolves"]
        if ack.comment:
            lines.append(f"comment: {ack.comment}")
        lines.append(_source_line(rule_id, alarm.rule_version, alarm.source))
        reason = AlertReason(ack.action)
        drafts = [
            self._emit(alarm, rule_id, AlertPhase.UPDATE, reason, at, lines, context, ack.ack_id)
        ]
        if alarm.phase is AlarmPhase.LATCHED and alarm.acknowledged_by is not None:
            del self._alarms[rule_id]
            alarm.phase = AlarmPhase.INACTIVE
            end = (
                f"latched alarm acknowledged by {ack.user}: it ends",
                _source_line(rule_id, alarm.rule_version, alarm.source),
            )
            drafts.append(
                self._emit(alarm, rule_id, AlertPhase.END, AlertReason.RESOLVED, at, end, context)
            )
        return AckOutcome("applied", tuple(drafts))

    # --- display and state ---------------------------------------------------------

    def active(self) -> list[ActiveAlarm]:
        """Alarms being shown, most urgent first (then oldest, then rule id)."""
        shown = [
            ActiveAlarm(
                alert_id=a.alert_id,
                rule_id=rule_id,
                priority=a.priority,
                phase=a.phase,
                condition_since=a.condition_since,
                acknowledged_by=a.acknowledged_by,
                silenced_until=a.silenced_until,
            )
            for rule_id, a in self._alarms.items()
            if a.phase in _SHOWN and a.alert_id is not None
        ]
        return sorted(
            shown, key=lambda s: (-PRIORITY_RANK[s.priority], s.condition_since, s.rule_id)
        )

    def phase_of(self, rule_id: str) -> AlarmPhase:
        """Where one rule's alarm is (``inactive`` when it has no state)."""
        alarm = self._alarms.get(rule_id)
        return AlarmPhase.INACTIVE if alarm is None else alarm.phase

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state (a faust table value)."""
        return {
            "state_version": STATE_VERSION,
            "last_at": self.last_at,
            "stale_evaluations": self.stale_evaluations,
            "alarms": {rule_id: a.to_state() for rule_id, a in self._alarms.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PatientAlarms:
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"unknown alarm state version {state.get('state_version')!r}")
        alarms = cls()
        alarms.last_at = state["last_at"]
        alarms.stale_evaluations = int(state["stale_evaluations"])
        alarms._alarms = {k: _Alarm.from_state(v) for k, v in state["alarms"].items()}
        return alarms
