"""One patient's merged state: every raw topic, in event time, into features and alarms.

The pure core the worker calls (``streams.app`` only decodes, looks up, calls,
emits). ``PatientState.apply`` takes one decoded record of any raw topic and
returns the alert drafts it causes; ``tick`` advances the patient's clock when
no data arrives (technical "no data" alarms); ``snapshot`` builds the features
topic message. No Kafka, no wall clock: every time is an observation time.

Late and out-of-order policy (DESIGN.md "Event time"):

- *Frequent quantities* (vitals, NIRS, CRRT): per quantity, a value whose
  observation time is not after the last one applied is late: counted in
  ``late_samples`` and dropped. Re-deliveries after a restart are skipped
  earlier, by the per-partition offsets the state remembers.
- *Labs and context* are applied whatever their time: a lab result is placed
  by its specimen time (results come after the specimen by design), and its
  effect is evaluated at the patient's current clock. The worker releases them
  through the same event-time merge as the monitors (``streams.merge``), so a
  replay read at any pace applies a row's labs with its hour's vitals.
- *Future times*: a message of a streaming source (a monitor's cadence, see
  below) more than ``FUTURE_TOLERANCE_S`` ahead of the patient's clock is a device
  clock fault: dropped and counted (``future_samples``), so one bad clock cannot end
  every pending alarm; unless ``JUMP_CONFIRM`` messages of that source in a row, each
  within a minute of the previous, are all ahead: then the device resumed after a
  gap in every source (its first messages are lost, not the patient). Charted and
  hourly sources (no monitor cadence: PhysioNet rows, MIMIC charting) jump by design
  and are never judged against the clock.
- *Gaps*: when a continuous signal (``CONTINUOUS_FEATURES``: arterial pressure,
  heart rate, SpO2, CVP, rSO2) resumes after ``GAP_S`` or more without a value,
  the rules are first evaluated with its short-window features unknown: a
  pending alarm is not confirmed across a gap and an active alarm is not
  cleared by it.

Which rules are evaluated when: a rule is evaluated on records of the sources its
features come from (``FEATURE_SOURCES``). A single-source rule (MAP, rSO2, CRRT
circuit, labs) runs on its source's own clock, so it depends only on its own
topic's order, which is the same at any replay speed. Rules that combine sources
(SOFA, congestion) run on the patient's clock with the latest value of the other
sources, so their timing can move by the skew between topics. "No data" rules are
evaluated only on ``tick``, against a watermark every source has passed, and only
for patients whose "no data" rules could change (``next_tick_at``): a rule on a
source's age cannot start before that age passes its threshold, nor while another
of its clauses (the source's cadence, say) is not true.

"No data" is a technical alarm about a device that stops streaming: the default
rules ask that the source's cadence (``<source>_interval_s``, the median gap of its
last records) be a monitor's, so hourly charted or replayed values (PhysioNet,
MIMIC charting) do not alarm every hour.
"""

from __future__ import annotations

import math
import statistics
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.alerts import AlertAck
from schemas.codes import QUANTITIES, Quantity
from schemas.context import (
    Admission,
    Discharge,
    PatientContext,
    Transfer,
    Weight,
)
from schemas.derived import FeatureSnapshot, Organ, OrganState, RiskScore
from schemas.observations import ObservationMessage
from streams.alarm import ActiveAlarm, AlertContext, AlertDraft, PatientAlarms
from streams.features.base import FeatureGroup, Features, PatientFacts
from streams.features.brain import BrainFeatures
from streams.features.catalog import FEATURES
from streams.features.congestion import CongestionFeatures
from streams.features.crrt import CrrtCircuitFeatures
from streams.features.labs import LabFeatures
from streams.features.organs import OrganFeatures
from streams.features.perfusion import PerfusionFeatures
from streams.features.renal import RenalFeatures
from streams.features.scores import news2, qsofa, sofa
from streams.features.windows import DAY_S, HOUR_S, SparseSeries
from streams.merge import TICK_EVERY_S, TickSchedule
from streams.rules import PRIORITY_RANK, AllOf, AnyOf, Clause, Condition, Rule, RuleSet

SOURCES = ("vitals", "nirs", "crrt", "labs", "context", "risk")
FREQUENT_SOURCES = ("vitals", "nirs", "crrt")
GAP_S = 60.0
"""A frequent source silent this long makes its features unknown first (gap policy)."""
FUTURE_TOLERANCE_S = 600.0
"""Observations more than 10 min ahead of the patient's clock are a clock fault."""
SCORES_EVERY_S = 60.0
"""SOFA, qSOFA and NEWS2 are recomputed at most once per event-time minute."""
ARTEFACT_WINDOW_S = 300.0
CADENCE_SAMPLES = 5
"""A source's cadence is the median of its last 5 gaps between records."""
STREAMING_CADENCE_S = 30.0
"""A source with a cadence at or below this is a streaming device (a monitor)."""
JUMP_CONFIRM = 3
"""Messages in a row ahead of the clock that make a streaming source's jump real."""
RETIRE_AFTER_DISCHARGE_S = 30 * DAY_S
"""A discharged patient's history is forgotten this long after the discharge (event
time): the longest any rule looks back is the body weight (``facts``: up to 30 days
old, for urine output per kg); creatinine baselines reach back 7 days (KDIGO 2012,
CLINICAL.md). What remains is a stub (``retire_if_due``), so the state table does not
keep every patient ever seen at full size."""

CONTINUOUS_FEATURES: Mapping[Quantity, tuple[str, ...]] = {
    Quantity.ABP_MEAN: ("map_mmhg", "map_median_1min_mmhg"),
    Quantity.ABP_SYS: ("sbp_mmhg", "shock_index"),
    Quantity.HEART_RATE: ("heart_rate_per_min", "shock_index"),
    Quantity.SPO2: ("spo2_pct", "sf_ratio"),
    Quantity.CVP: ("cvp_median_5min_mmhg",),
    Quantity.CVP_MEAN: ("cvp_median_5min_mmhg",),
    Quantity.RSO2_LEFT: (
        "rso2_left_pct",
        "rso2_min_pct",
        "rso2_drop_from_baseline_pct",
        "rso2_asymmetry_points",
    ),
    Quantity.RSO2_RIGHT: (
        "rso2_right_pct",
        "rso2_min_pct",
        "rso2_drop_from_baseline_pct",
        "rso2_asymmetry_points",
    ),
}
"""Continuous signals and the short-window features made of them (gap policy)."""

_GROUP_TYPES: dict[str, type[FeatureGroup]] = {
    "perfusion": PerfusionFeatures,
    "renal": RenalFeatures,
    "congestion": CongestionFeatures,
    "brain": BrainFeatures,
    "crrt": CrrtCircuitFeatures,
    "organs": OrganFeatures,
    "labs": LabFeatures,
}

_ROUTES: dict[Quantity, tuple[str, ...]] = {
    quantity: tuple(n for n, kind in _GROUP_TYPES.items() if quantity in kind.quantities)
    for quantity in Quantity
}
"""Which groups read each quantity (a measurement goes only to them)."""

_TECHNICAL = frozenset(name for name, spec in FEATURES.items() if spec.organ == "technical")
_ARTEFACT_SOURCES = frozenset({"vitals", "nirs"})
_DATA_AGES = frozenset(name for name in _TECHNICAL if name.endswith("_data_age_s"))
""""No data" features: evaluated only on ticks, against the sources' own progress."""
_SCORE_FEATURES = frozenset(name for name, spec in FEATURES.items() if spec.organ == "scores")
_RISK_FEATURES = frozenset(name for name, spec in FEATURES.items() if spec.organ == "risk")
"""From the risk topic: for the rules only, not published on the features topic."""
_SNAPSHOT_FEATURES: tuple[tuple[str, str, str], ...] = tuple(
    (name, spec.unit, spec.organ) for name, spec in FEATURES.items() if name not in _RISK_FEATURES
)
"""(name, unit, organ) of each feature the features topic carries."""
_NO_COMPLETENESS = frozenset({"risk", "labs"})
"""Organs left out of the snapshot's completeness: risk inputs are not published; the
other labs (``streams.features.labs``) are not expected for every patient."""
_FEATURES_BY_ORGAN: dict[str, tuple[str, ...]] = {
    organ: tuple(name for name, _unit, of in _SNAPSHOT_FEATURES if of == organ)
    for organ in dict.fromkeys(organ for _name, _unit, organ in _SNAPSHOT_FEATURES)
    if organ not in _NO_COMPLETENESS
}
"""The features topic's names by organ group, for its completeness."""


def _feature_sources() -> dict[str, frozenset[str]]:
    """Which raw sources each feature is computed from (drives rule evaluation)."""
    by_prefix: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("lactate_", ("labs",)),
        ("creatinine_", ("labs",)),
        ("kdigo_creatinine", ("labs",)),
        ("kdigo_stage", ("labs", "context", "crrt")),
        ("urine_output", ("context",)),
        ("kdigo_urine", ("context",)),
        ("furosemide", ("context",)),
        ("crrt_liberation", ("context",)),
        ("capillary_refill", ("context",)),
        ("fluid_balance", ("context", "crrt")),
        ("rvd_", ("context",)),
        ("cvp_rising_with", ("vitals", "context")),
        ("cvp_", ("vitals",)),
        ("nse_", ("labs",)),
        ("rso2_", ("nirs",)),
        ("crrt_", ("crrt",)),
        ("fio2", ("labs",)),
        ("pao2", ("labs",)),
        ("pf_ratio", ("labs",)),
        ("sf_ratio", ("vitals", "labs")),
        ("platelets", ("labs",)),
        ("bilirubin", ("labs",)),
        ("gcs", ("context",)),
        ("norepinephrine", ("context",)),
        ("epinephrine", ("context",)),
        ("dopamine", ("context",)),
        ("dobutamine", ("context",)),
        ("vasopressor", ("context",)),
    )
    found: dict[str, frozenset[str]] = {}
    for name, spec in FEATURES.items():
        if spec.organ == "risk":
            found[name] = frozenset({"risk"})
            continue
        if spec.organ == "labs":
            found[name] = frozenset({"labs"})
            continue
        if spec.organ in ("technical", "scores"):
            found[name] = frozenset(SOURCES)
            for source in FREQUENT_SOURCES:
                if name.startswith(f"{source}_artefact"):
                    found[name] = frozenset({source})
            continue
        sources: tuple[str, ...] = ("vitals",)
        for prefix, where in by_prefix:
            if name.startswith(prefix):
                sources = where
                break
        found[name] = frozenset(sources)
    return found


FEATURE_SOURCES: Mapping[str, frozenset[str]] = _feature_sources()


def _iso(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@dataclass
class _SourceClock:
    """Per source: last observation time applied, its cadence, artefact counts per minute."""

    last_at: float | None = None
    minutes: dict[int, list[int]] = field(default_factory=dict)  # minute -> [values, artefacts]
    intervals: list[float] = field(default_factory=list)  # the last CADENCE_SAMPLES gaps, s
    jump: list[float] = field(default_factory=list)  # [time, count] of messages ahead

    def streaming(self) -> bool:
        """Whether the source has a monitor's cadence (so a jump ahead is suspect)."""
        cadence = self.interval_s()
        return cadence is not None and cadence <= STREAMING_CADENCE_S

    def confirms_jump(self, at: float) -> bool:
        """One more message ahead of the patient's clock at ``at``: True once
        ``JUMP_CONFIRM`` came in a row, each within a minute of the previous.

        >>> clock = _SourceClock()
        >>> [clock.confirms_jump(t) for t in (1000.0, 1001.0, 1002.0)]
        [False, False, True]
        >>> [clock.confirms_jump(t) for t in (5000.0, 9000.0)]  # 4000 s apart: a new run
        [False, False]
        """
        if self.jump and 0 < at - self.jump[0] <= 60:
            self.jump = [at, self.jump[1] + 1]
        else:
            self.jump = [at, 1]
        if self.jump[1] >= JUMP_CONFIRM:
            self.jump = []
            return True
        return False

    def advance(self, at: float) -> None:
        """A record observed at ``at`` was applied: move the clock, learn the cadence."""
        self.jump = []
        previous = self.last_at
        if previous is None or at > previous:
            if previous is not None:
                self.intervals.append(at - previous)
                del self.intervals[:-CADENCE_SAMPLES]
            self.last_at = at

    def interval_s(self) -> float | None:
        """Median gap between the last records: the source's cadence (None before two).

        >>> clock = _SourceClock()
        >>> for t in (0, 1, 2, 3, 63):
        ...     clock.advance(t)
        >>> clock.interval_s()
        1.0
        """
        if not self.intervals:
            return None
        return float(statistics.median(self.intervals))

    def count(self, at: float, artefact: bool) -> None:
        minute = int(at // 60)
        row = self.minutes.setdefault(minute, [0, 0])
        row[0] += 1
        row[1] += int(artefact)
        if len(self.minutes) > 8:
            for old in sorted(self.minutes)[:-6]:
                del self.minutes[old]

    def artefact_fraction(self, at: float) -> float | None:
        first = int((at - ARTEFACT_WINDOW_S) // 60) + 1
        rows = [r for m, r in self.minutes.items() if first <= m <= int(at // 60)]
        total = sum(r[0] for r in rows)
        return sum(r[1] for r in rows) / total if total else None

    def to_state(self) -> dict[str, Any]:
        return {
            "l": self.last_at,
            "m": {str(k): v for k, v in self.minutes.items()},
            "i": self.intervals,
            "j": self.jump,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _SourceClock:
        minutes = {int(k): list(v) for k, v in state["m"].items()}
        return cls(state["l"], minutes, list(state.get("i", ())), list(state.get("j", ())))


class PatientState:
    """Everything Vigil knows about one patient, and its alarms."""

    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id
        self.bed: str | None = None
        self.care_unit: str | None = None
        self.site: str | None = None
        self.groups: dict[str, Any] = {name: kind() for name, kind in _GROUP_TYPES.items()}
        # Rules that read one source run on that source's clock, so topics read at
        # different paces (a replay at full speed) cannot shift each other's timing;
        # rules mixing sources run on the patient's clock ("mixed").
        self.engines = {key: PatientAlarms() for key in (*SOURCES, "mixed")}
        # "no data" rules run on ticks, on their own clock (see ``tick``)
        self.watchdog = PatientAlarms()
        self.weight = SparseSeries(horizon_s=30 * DAY_S)
        self.sources = {source: _SourceClock() for source in SOURCES}
        self.quantity_at: dict[str, float] = {}  # frequent quantity -> last time applied
        self.offsets: dict[str, int] = {}  # "topic:partition" -> last offset applied
        self.clock: float | None = None  # patient's event time: latest observation applied
        self.discharged_at: float | None = None
        self.late_samples = 0
        self.future_samples = 0
        self.cache: Features = {}  # last computed value of every feature
        self.scores_at: float | None = None
        # hour -> lowest subscore per SOFA organ that hour (for "new or worsening organ")
        self.sofa_hours: dict[int, dict[str, int]] = {}
        self.published_at: float | None = None
        self.published: Features = {}
        # latest grid time of its partition's "no data" ticks this state has been through
        # (ticked, or not due): after a reload, ticks up to it are not evaluated again
        self.ticked_at: float | None = None
        self.retired = False  # only the stub of a long-discharged patient (``retire_if_due``)

    # ---- input -------------------------------------------------------------------

    def retire_if_due(self, at: float) -> bool:
        """Keep only a stub once ``at`` (event time) is ``RETIRE_AFTER_DISCHARGE_S`` past
        the discharge: the id, the discharge and clock times, the offsets applied and the
        late / future counts. Nothing a rule reads survives, nor would it be used by then:
        a readmission starts afresh. True when it retired the state now.

        >>> state = PatientState("p1")
        >>> state.discharged_at, state.clock, state.quantity_at = 0.0, 0.0, {"heart_rate": 0.0}
        >>> state.retire_if_due(29 * DAY_S), state.retire_if_due(30 * DAY_S)
        (False, True)
        >>> state.retired, state.discharged_at, state.quantity_at, state.retire_if_due(31 * DAY_S)
        (True, 0.0, {}, False)
        """
        discharged_at = self.discharged_at
        if self.retired or discharged_at is None or at < discharged_at + RETIRE_AFTER_DISCHARGE_S:
            return False
        kept = (self.clock, self.offsets, self.late_samples, self.future_samples)
        self.__dict__.update(PatientState(self.patient_id).__dict__)
        self.clock, self.offsets, self.late_samples, self.future_samples = kept
        self.discharged_at, self.retired = discharged_at, True
        return True

    def seen(self, position: str, offset: int) -> bool:
        """True when the record at ``offset`` of ``position`` (topic:partition) was applied.

        Offsets are remembered per patient, so a record re-delivered after a restart
        (the committed offset lags the state) changes nothing.
        """
        last = self.offsets.get(position)
        return last is not None and offset <= last

    def remember(self, position: str, offset: int) -> None:
        self.offsets[position] = offset

    def apply_risk(self, score: RiskScore, rules: RuleSet) -> list[AlertDraft]:
        """A risk score from the risk agent (``streams.risk``): ``risk_<outcome>`` for
        the risk rules, evaluated on the risk topic's own clock. A score not newer than
        the last one of its outcome is late; an outcome without a feature is ignored."""
        name = f"risk_{score.outcome}"
        at = score.computed_at.timestamp()
        if name not in _RISK_FEATURES:
            return []
        last = self.quantity_at.get(name)
        if last is not None and at <= last:
            self.late_samples += 1
            return []
        self.quantity_at[name] = at
        self.cache[name] = score.probability
        self.cache["risk_cold_start"] = 1.0 if score.cold_start else 0.0
        ratio = f"{name}_threshold_ratio"
        if ratio in _RISK_FEATURES:  # the cut the model learned (utility-chosen)
            threshold = score.decision_threshold
            self.cache[ratio] = score.probability / threshold if threshold else None
        return self._after_input("risk", at, None, rules)

    def apply_observations(
        self, source: str, message: ObservationMessage, rules: RuleSet
    ) -> list[AlertDraft]:
        """Apply one vitals / nirs / crrt / labs message; return the alerts it causes."""
        self.bed = message.bed or self.bed
        self.care_unit = message.care_unit or self.care_unit
        frequent = source in FREQUENT_SOURCES
        clock = self.sources[source]
        applied_at: float | None = None
        gapped: set[str] = set()
        jump: bool | None = None  # decided once per message, at its first sample ahead
        for m in message.measurements:
            if m.quantity is None or m.value is None:
                continue
            at = m.observed_at.timestamp()
            if self.clock is not None and at > self.clock + FUTURE_TOLERANCE_S:
                if jump is None:
                    jump = not clock.streaming() or clock.confirms_jump(at)
                if not jump:
                    self.future_samples += 1
                    continue
            if frequent:
                key = m.quantity.value
                last = self.quantity_at.get(key)
                if last is not None and at <= last:
                    self.late_samples += 1
                    continue
                if last is not None and at - last >= GAP_S and not m.artefact:
                    gapped.update(CONTINUOUS_FEATURES.get(m.quantity, ()))
                self.quantity_at[key] = at
                clock.count(at, m.artefact)
            if m.artefact or not QUANTITIES[m.quantity].numeric:
                continue
            for name in _ROUTES[m.quantity]:
                self.groups[name].observe(m.quantity, at, m.value)
            applied_at = at if applied_at is None else max(applied_at, at)
        if applied_at is None:
            return []
        return self._after_input(source, applied_at, message.received_at, rules, gapped)

    def apply_context(self, event: PatientContext, rules: RuleSet) -> list[AlertDraft]:
        """Apply one context event (ADT, weight, drugs, charting); a discharge ends the
        patient's alarms (``PatientAlarms.discharge``)."""
        at = event.observed_at.timestamp()
        ended: list[AlertDraft] = []
        if isinstance(event, Admission | Transfer):
            self.bed = event.bed or self.bed
            self.care_unit = event.care_unit or self.care_unit
            self.site = event.site or self.site
            if isinstance(event, Admission):
                self.discharged_at, self.retired = None, False
        elif isinstance(event, Discharge):
            self.discharged_at = at
            context = self._context(event.received_at)
            ended = [
                draft
                for engine in (*self.engines.values(), self.watchdog)
                for draft in engine.discharge(at, context)
            ]
        elif isinstance(event, Weight):
            self.weight.insert(at, event.weight_kg)
        for group in self.groups.values():
            group.observe_context(event, at)
        return ended + self._after_input("context", at, event.received_at, rules)

    def acknowledge(self, ack: AlertAck, rules: RuleSet) -> list[AlertDraft]:
        """An acknowledgement from the alerts.ack topic: pauses re-announcement only."""
        for engine in (*self.engines.values(), self.watchdog):
            outcome = engine.acknowledge(ack, rules, self._context(None))
            if outcome.status != "unknown_alert":
                return list(outcome.drafts)
        return []

    # ---- evaluation ----------------------------------------------------------------

    def facts(self, at: float) -> PatientFacts:
        crrt: CrrtCircuitFeatures = self.groups["crrt"]
        return PatientFacts(
            weight_kg=self.weight.latest(at, max_age_s=30 * DAY_S),
            on_crrt=crrt.on_crrt(at),
        )

    def _after_input(
        self,
        source: str,
        at: float,
        received_at: datetime | None,
        rules: RuleSet,
        gapped: set[str] | None = None,
    ) -> list[AlertDraft]:
        clock = self.sources[source]
        clock.advance(at)
        self.clock = at if self.clock is None else max(self.clock, at)
        # discharged: nothing to watch until the next admission. A risk score is judged
        # by its own time: the agent may read the features later than the worker reads
        # the discharge (a replay at full speed), and the result must not depend on that.
        since = at if source == "risk" else self.clock
        if self.discharged_at is not None and since >= self.discharged_at:
            return []
        context = self._context(received_at)
        unknown = dict.fromkeys(gapped) if gapped else None
        drafts: list[AlertDraft] = []
        own, mixed = _rules_for(rules, source)
        source_clock = clock.last_at
        if own and source_clock is not None:
            # as of the source's own time: another topic read ahead cannot age its window
            features = self._compute(source_clock, {source})
            engine = self.engines[source]
            if unknown:
                drafts += engine.evaluate(
                    source_clock, {**features, **unknown}, rules, context, own
                )
            drafts += engine.evaluate(source_clock, features, rules, context, own)
        if mixed:
            if not (own and source_clock == self.clock):  # else the features just computed
                features = self._compute(self.clock, {source})
            engine = self.engines["mixed"]
            if unknown:
                drafts += engine.evaluate(
                    self.clock, {**features, **unknown}, rules, context, mixed
                )
            drafts += engine.evaluate(self.clock, features, rules, context, mixed)
        return drafts

    def tick(self, at: float, rules: RuleSet) -> list[AlertDraft]:
        """Evaluate the "no data" rules at event time ``at``: a watermark.

        The caller (the worker, per partition) ticks every patient on a grid of
        event time once *every* source on the partition has passed ``at``, so each
        source's records up to ``at`` are applied whatever the skew between topics:
        the age of each source is then ``at`` minus its last observation (0 when the
        source is ahead), and the result is the same at any replay speed. These
        rules keep their own alarm clock (``watchdog``), apart from the record-driven
        rules evaluated at the patient's own clock.
        """
        if self.clock is None or self.discharged_at is not None:
            return []
        features = {**self.cache, **self._technical(at)}
        selected = _watchdog_rules(rules)
        if not selected:
            return []
        return self.watchdog.evaluate(at, features, rules, self._context(None), only=selected)

    def passed_tick(self, at: float) -> None:
        """Every "no data" tick of its partition up to grid time ``at`` has been through
        this state (evaluated, or the patient was not due): a reload of this state must
        not evaluate them again (see ``tick_due`` and ``resume_tick``)."""
        if self.ticked_at is None or at > self.ticked_at:
            self.ticked_at = at

    def resume_tick(self) -> float | None:
        """The grid time its partition's ticks must resume after, once this state is
        reloaded (a rebalance or restart), so that no tick it has not been through is
        skipped; None: it needs none before its next record.

        ``ticked_at`` when known. A state written before that mark existed has been
        through every tick before its frequent sources' latest record (they are merged
        in event time, ticks included), so the last grid time before it.
        """
        if self.ticked_at is not None:
            return self.ticked_at
        seen = [clock.last_at for name, clock in self.sources.items() if name in FREQUENT_SOURCES]
        latest = max((t for t in seen if t is not None), default=None)
        return None if latest is None else math.ceil(latest / TICK_EVERY_S - 1) * TICK_EVERY_S

    def next_tick_at(self, rules: RuleSet, now: float) -> float | None:
        """Earliest event time a ``tick`` could change the "no data" alarms; None: not
        before the next record (records move ages and every other feature; ticks only
        let the ages grow).

        ``now`` (the last tick or record) while a "no data" alarm is pending or shown:
        its delays and reminders run on every grid point.
        """
        if self.clock is None or self.discharged_at is not None:
            return None
        if self.watchdog.has_alarms:
            return now
        frozen = ChainMap(self._technical(now), self.cache)
        due: float | None = None
        for rule in rules.enabled:
            if rule.id in _watchdog_rules(rules):
                at = self._earliest_true(rule.condition, now, frozen)
                if at is not None and (due is None or at < due):
                    due = at
        return due

    def _earliest_true(
        self, condition: Condition, now: float, frozen: Mapping[str, float | None]
    ) -> float | None:
        """A lower bound of the first time ``condition`` can hold if no record arrives
        (None: it cannot). Ages grow with time; every other feature stays as it is."""
        if isinstance(condition, AllOf | AnyOf):
            times = [self._earliest_true(c, now, frozen) for c in _members(condition)]
            possible = [t for t in times if t is not None]
            if isinstance(condition, AllOf):
                return max([now, *possible]) if len(possible) == len(times) else None
            return min(possible) if possible else None
        if isinstance(condition, Clause) and condition.feature in _DATA_AGES:
            last = self._last_seen(condition.feature)
            if last is None:
                return None  # unknown until a record: never true
            if condition.op in (">", ">="):
                return max(now, last + condition.value)
        return now if condition.holds(frozen) is True else None

    def _last_seen(self, age_feature: str) -> float | None:
        if age_feature == "arterial_line_data_age_s":
            return self.quantity_at.get(Quantity.ABP_MEAN.value)
        return self.sources[age_feature.removesuffix("_data_age_s")].last_at

    def _context(self, received_at: datetime | None) -> AlertContext:
        return AlertContext(
            patient_id=self.patient_id,
            bed=self.bed,
            care_unit=self.care_unit,
            site=self.site,
            trigger_received_at=received_at,
        )

    @property
    def alarms(self) -> list[ActiveAlarm]:
        """Every alarm currently shown for this patient, most urgent first."""
        shown = [a for e in (*self.engines.values(), self.watchdog) for a in e.active()]
        return sorted(shown, key=lambda a: (-PRIORITY_RANK[a.priority], a.condition_since))

    def _compute(self, at: float, sources: Iterable[str]) -> Features:
        """Features as of ``at``: the groups fed by ``sources``, scores once a minute."""
        wanted = set(sources)
        facts = self.facts(at)
        for name, group in self.groups.items():
            if wanted & _GROUP_SOURCES[name]:
                self.cache.update(group.features(at, facts))
        for source in _ARTEFACT_SOURCES & wanted:
            fraction = self.sources[source].artefact_fraction(at)
            self.cache[f"{source}_artefact_fraction_5min"] = fraction
        if (
            self.scores_at is None
            or at - self.scores_at >= SCORES_EVERY_S
            or not wanted.isdisjoint(("labs", "context"))
        ):
            for name, group in self.groups.items():
                if name not in _ON_THEIR_SOURCES:
                    self.cache.update(group.features(at, facts))
            self.cache.update(self._technical(at))
            self.cache.update(self._scores(at))
            self.scores_at = at
        return dict(self.cache)

    def _technical(self, at: float) -> Features:
        def age(last: float | None) -> float | None:  # 0 when the source is ahead of ``at``
            return None if last is None else max(0.0, at - last)

        abp = self.quantity_at.get(Quantity.ABP_MEAN.value)
        return {
            "vitals_data_age_s": age(self.sources["vitals"].last_at),
            "arterial_line_data_age_s": age(abp),
            "nirs_data_age_s": age(self.sources["nirs"].last_at),
            "crrt_data_age_s": age(self.sources["crrt"].last_at),
            "vitals_interval_s": self.sources["vitals"].interval_s(),
            "nirs_interval_s": self.sources["nirs"].interval_s(),
            "crrt_interval_s": self.sources["crrt"].interval_s(),
            "vitals_artefact_fraction_5min": self.sources["vitals"].artefact_fraction(at),
            "nirs_artefact_fraction_5min": self.sources["nirs"].artefact_fraction(at),
        }

    def _scores(self, at: float) -> Features:
        """SOFA (with its 24-h course), qSOFA and NEWS2 from the cached features."""
        f = self.cache
        uo_24h = f.get("urine_output_24h_ml")
        score = sofa(
            pf_ratio_mmhg=f.get("pf_ratio_mmhg"),
            sf_ratio=f.get("sf_ratio"),
            platelets_10e3_ul=f.get("platelets_10e3_ul"),
            bilirubin_mg_dl=f.get("bilirubin_mg_dl"),
            map_mmhg=f.get("map_mmhg"),
            # no infusion charted = not running (a drug never charted is not unknown)
            dopamine=f.get("dopamine_ug_kg_min") or 0.0,
            dobutamine=f.get("dobutamine_ug_kg_min") or 0.0,
            norepinephrine=f.get("norepinephrine_ug_kg_min") or 0.0,
            epinephrine=f.get("epinephrine_ug_kg_min") or 0.0,
            gcs_total=_int_or_none(f.get("gcs_total")),
            creatinine_mg_dl=f.get("creatinine_mg_dl"),
            urine_output_ml_day=uo_24h,
        )
        hour = int(at // HOUR_S)
        previous = [v for h, v in self.sofa_hours.items() if hour - 24 <= h < hour]
        worsened = 0
        rise = 0
        for organ, subscore in score.subscores.items():
            if subscore is None:
                continue
            history = [row[organ] for row in previous if organ in row]
            if history:
                lowest = min(history)
                rise += max(0, subscore - lowest)
                if subscore >= 2 and subscore >= lowest + 1:
                    worsened += 1
            row = self.sofa_hours.setdefault(hour, {})
            row[organ] = min(row.get(organ, subscore), subscore)
        for old in [h for h in self.sofa_hours if h < hour - 24]:
            del self.sofa_hours[old]
        known_history = any(self.sofa_hours.get(h) for h in range(hour - 24, hour))
        gcs = f.get("gcs_total")
        quick = qsofa(f.get("resp_rate_per_min"), _int_or_none(gcs), f.get("sbp_mmhg"))
        fio2 = f.get("fio2_pct")
        early = news2(
            resp_rate_per_min=f.get("resp_rate_per_min"),
            spo2_pct=f.get("spo2_pct"),
            on_supplemental_o2=None if fio2 is None else fio2 > 21.5,
            sbp_mmhg=f.get("sbp_mmhg"),
            pulse_per_min=f.get("heart_rate_per_min"),
            consciousness_alert=None if gcs is None else gcs >= 15,
            temperature_cel=f.get("temperature_cel"),
        )
        single3 = early.single_parameter_3
        subscores: Features = {
            f"sofa_{organ}": None if value is None else float(value)
            for organ, value in score.subscores.items()
        }
        return {
            **subscores,
            "sofa_total": None if score.total is None else float(score.total),
            "sofa_known_organs": float(score.known_organs),
            "sofa_total_rise_24h": float(rise) if known_history else None,
            "sofa_worsened_organs": float(worsened) if known_history else None,
            "qsofa": None if quick.score is None else float(quick.score),
            "news2": None if early.total is None else float(early.total),
            "news2_single_parameter_3": None if single3 is None else float(single3),
        }

    # ---- features topic ------------------------------------------------------------

    def snapshot_closing(
        self, at: float | None, every_s: float, min_every_s: float
    ) -> FeatureSnapshot | None:
        """The snapshot of the patient's clock, taken as an input at event time ``at``
        is about to move the clock past it (``at=None``: the stay ends), if one is due.

        A snapshot thus describes an event time whose records are all applied,
        whatever their order on the topics or how they were batched: the features
        topic is the same at any replay speed (a PhysioNet row's labs and vitals are
        in its hour's snapshot, as :func:`services.physionet_eval.offline_snapshots`).

        >>> from datetime import UTC, datetime
        >>> from schemas.observations import Measurement, Quantity, SourceInfo, VitalSigns
        >>> from streams.rules import load_rules
        >>> def vitals(t: float) -> VitalSigns:
        ...     at = datetime.fromtimestamp(t, UTC)
        ...     m = Measurement.of(Quantity.HEART_RATE, 80.0, at)
        ...     return VitalSigns(patient_id="p1", source=SourceInfo(adapter="doc"),
        ...                       received_at=at, measurements=(m,))
        >>> state, rules = PatientState("p1"), load_rules()
        >>> state.snapshot_closing(0.0, 60, 10) is None  # nothing applied yet
        True
        >>> _ = state.apply_observations("vitals", vitals(3600.0), rules)
        >>> state.snapshot_closing(3600.0, 60, 10) is None  # same time: not closed
        True
        >>> state.snapshot_closing(7200.0, 60, 10).computed_at.hour  # the next row closes it
        1
        >>> state.snapshot_closing(None, 60, 10) is None  # already published for 1:00
        True
        """
        if self.clock is None or self.discharged_at is not None:
            return None
        if at is not None and at <= self.clock:
            return None
        if not self.snapshot_due(self.clock, every_s, min_every_s):
            return None
        return self.snapshot(self.clock)

    def snapshot_due(self, at: float, every_s: float, min_every_s: float) -> bool:
        """Publish on change, at most every ``min_every_s``, at least every ``every_s``."""
        if self.published_at is None:
            return True
        elapsed = at - self.published_at
        if elapsed >= every_s:
            return True
        return elapsed >= min_every_s and self._changed()

    def _changed(self) -> bool:
        for name, value in self.cache.items():
            before = self.published.get(name)
            if (value is None) != (before is None):
                return True
            if (
                value is not None
                and before is not None
                and not math.isclose(value, before, rel_tol=0.02, abs_tol=0.5)
            ) and name not in _TECHNICAL | _RISK_FEATURES:
                return True
        return False

    def snapshot(self, at: float) -> FeatureSnapshot:
        """The features topic message as of event time ``at``; marks it published."""
        self._compute(at, SOURCES)
        self.cache.update(self._technical(at))
        features = dict(self.cache)
        self.published_at, self.published = at, dict(features)
        ages = self._ages(at)
        # plain dicts, validated in one pass (one FeatureValue() call each costs 5x more)
        values = {
            name: {"value": features.get(name), "unit": unit, "age_s": ages.get(organ)}
            for name, unit, organ in _SNAPSHOT_FEATURES
        }
        known = features.get("sofa_known_organs")
        total = features.get("sofa_total")
        return FeatureSnapshot.model_validate(
            {
                "patient_id": self.patient_id,
                "computed_at": _iso(at),
                "features": values,
                "organs": _organ_states(features, ages),
                "sofa_total": None if total is None else int(total),
                "sofa_known_organs": 0 if known is None else int(known),
                "completeness": self.completeness(features),
            }
        )

    def _ages(self, at: float) -> dict[str, float | None]:
        def age(source: str) -> float | None:
            last = self.sources[source].last_at
            return None if last is None else max(0.0, at - last)

        return {
            "perfusion": age("vitals"),
            "respiratory": age("vitals"),
            "congestion": age("vitals"),
            "brain": age("nirs"),
            "crrt": age("crrt"),
            "renal": age("context"),
            "labs": age("labs"),
            "technical": 0.0,
        }

    @staticmethod
    def completeness(features: Features) -> dict[str, float]:
        """Per organ group, the fraction of its features that are known (0..1)."""
        return {
            organ: sum(features.get(name) is not None for name in names) / len(names)
            for organ, names in _FEATURES_BY_ORGAN.items()
        }

    # ---- state ---------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        if self.retired:  # a stub: what ``retire_if_due`` keeps (bed and unit: set since)
            return {
                "id": self.patient_id,
                "bed": self.bed,
                "unit": self.care_unit,
                "site": self.site,
                "offsets": self.offsets,
                "clock": self.clock,
                "discharged": self.discharged_at,
                "late": self.late_samples,
                "future": self.future_samples,
                "retired": True,
            }
        return {
            "id": self.patient_id,
            "bed": self.bed,
            "unit": self.care_unit,
            "site": self.site,
            "groups": {name: group.to_state() for name, group in self.groups.items()},
            "engines": {key: engine.to_state() for key, engine in self.engines.items()},
            "watchdog": self.watchdog.to_state(),
            "weight": self.weight.to_state(),
            "sources": {name: clock.to_state() for name, clock in self.sources.items()},
            "qat": self.quantity_at,
            "offsets": self.offsets,
            "clock": self.clock,
            "discharged": self.discharged_at,
            "late": self.late_samples,
            "future": self.future_samples,
            "cache": self.cache,
            "scores_at": self.scores_at,
            "sofa_hours": {str(h): row for h, row in self.sofa_hours.items()},
            "published_at": self.published_at,
            "published": self.published,
            "ticked": self.ticked_at,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PatientState:
        patient = cls(state["id"])
        patient.bed, patient.care_unit, patient.site = state["bed"], state["unit"], state["site"]
        if state.get("retired"):
            patient.offsets = dict(state["offsets"])
            patient.clock, patient.discharged_at = state["clock"], state["discharged"]
            patient.late_samples, patient.future_samples = state["late"], state["future"]
            patient.retired = True
            return patient
        # a group added since the state was written starts empty
        patient.groups.update(
            {name: _GROUP_TYPES[name].from_state(group) for name, group in state["groups"].items()}
        )
        patient.engines.update(
            {k: PatientAlarms.from_state(e) for k, e in state["engines"].items()}
        )
        patient.watchdog = PatientAlarms.from_state(state["watchdog"])
        patient.weight = SparseSeries.from_state(state["weight"])
        patient.sources.update({n: _SourceClock.from_state(s) for n, s in state["sources"].items()})
        patient.quantity_at = dict(state["qat"])
        patient.offsets = dict(state["offsets"])
        patient.clock = state["clock"]
        patient.discharged_at = state["discharged"]
        patient.late_samples, patient.future_samples = state["late"], state["future"]
        patient.cache = dict(state["cache"])
        patient.scores_at = state["scores_at"]
        patient.sofa_hours = {int(h): dict(row) for h, row in state["sofa_hours"].items()}
        patient.published_at = state["published_at"]
        patient.published = dict(state["published"])
        patient.ticked_at = state.get("ticked")
        return patient


_SELECTIONS: dict[tuple[int, str], tuple[RuleSet, frozenset[str], frozenset[str]]] = {}


def _rule_sources(rule: Rule) -> frozenset[str]:
    """The sources a rule's conditions read (``explain`` features only decorate it)."""
    clauses = list(rule.condition.clauses())
    if rule.escalation is not None and rule.escalation.condition is not None:
        clauses += list(rule.escalation.condition.clauses())
    return frozenset().union(*(FEATURE_SOURCES[c.feature] for c in clauses))


def _rules_for(rules: RuleSet, source: str) -> tuple[frozenset[str], frozenset[str]]:
    """(single-source rules of ``source``, mixed-source rules reading it); no "no data" rules."""
    key = (id(rules), source)
    cached = _SELECTIONS.get(key)
    if cached is not None:
        return cached[1], cached[2]
    own, mixed = set(), set()
    for rule in rules.enabled:
        if any(f in _DATA_AGES for f in rule.feature_names):
            continue
        sources = _rule_sources(rule)
        if sources == {source}:
            own.add(rule.id)
        elif source in sources:
            mixed.add(rule.id)
    if len(_SELECTIONS) > 64:  # rule sets come and go in tests
        _SELECTIONS.clear()
    found = _SELECTIONS[key] = (rules, frozenset(own), frozenset(mixed))  # holds the id unique
    return found[1], found[2]


_WATCHDOG: dict[int, tuple[RuleSet, frozenset[str]]] = {}


def _watchdog_rules(rules: RuleSet) -> frozenset[str]:
    """Ids of the "no data" rules (evaluated on ticks only)."""
    cached = _WATCHDOG.get(id(rules))
    if cached is None:
        found = frozenset(
            r.id for r in rules.enabled if any(f in _DATA_AGES for f in r.feature_names)
        )
        if len(_WATCHDOG) > 64:
            _WATCHDOG.clear()
        cached = _WATCHDOG[id(rules)] = (rules, found)  # holding the rule set keeps its id
    return cached[1]


def tick_due(
    schedule: TickSchedule,
    state_of: Callable[[str], PatientState | None],
    at: float,
    rules: RuleSet,
) -> Iterator[tuple[str, list[AlertDraft]]]:
    """Tick, at grid time ``at``, the patients of one partition due by then, and
    schedule their next tick: ``(patient id, alert drafts)`` per patient ticked.

    A record schedules its patient at its own time (cheap, once per grid step): here
    the patient's due time is computed from its state as of ``at``, and it is
    ticked only if that time has come.

    A state reloaded after a rebalance or restart is not ticked again at grid times it
    has been through before it was written (``PatientState.ticked_at``): its partition's
    ticks resume from the earliest such mark of its patients, so every tick any of them
    missed is evaluated, once."""
    for patient_id in schedule.pop_due(at):
        state = state_of(patient_id)
        if state is None:
            continue
        if state.ticked_at is not None and at <= state.ticked_at:
            schedule.schedule(patient_id, at)  # checked again on the next grid time
            continue
        due = state.next_tick_at(rules, at)
        if due is None:
            continue
        if due > at:  # a record moved it on since it was scheduled
            schedule.schedule(patient_id, due)
            continue
        drafts = state.tick(at, rules)
        state.passed_tick(at)
        schedule.schedule(patient_id, state.next_tick_at(rules, at))
        yield patient_id, drafts


def _members(condition: AllOf | AnyOf) -> tuple[Condition, ...]:
    return condition.all if isinstance(condition, AllOf) else condition.any


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else round(value)


_GROUP_SOURCES: dict[str, frozenset[str]] = {
    "perfusion": frozenset({"vitals", "labs", "context"}),
    "renal": frozenset({"labs", "context", "crrt"}),
    "congestion": frozenset({"vitals", "context", "crrt"}),
    "brain": frozenset({"nirs", "labs"}),
    "crrt": frozenset({"crrt", "context"}),
    "organs": frozenset({"vitals", "labs", "context"}),
    "labs": frozenset({"labs"}),
}

_ON_THEIR_SOURCES = frozenset({"labs"})
"""Groups computed only when one of their sources is applied (and for every snapshot),
not in the once-a-minute recomputation of the scores: the other labs change only when
a result arrives, and adding them to the vitals path would cost every 1-Hz patient."""

_SOFA_ORGANS: dict[Organ, str] = {
    Organ.RESPIRATORY: "sofa_respiratory",
    Organ.COAGULATION: "sofa_coagulation",
    Organ.LIVER: "sofa_liver",
    Organ.CARDIOVASCULAR: "sofa_cardiovascular",
    Organ.CNS: "sofa_cns",
    Organ.RENAL: "sofa_renal",
}


def _status(subscore: int | None) -> str:
    if subscore is None:
        return "unknown"
    return "normal" if subscore == 0 else "impaired" if subscore <= 2 else "failing"


def _organ_states(features: Features, ages: Mapping[str, float | None]) -> dict[Organ, OrganState]:
    """The organ row of the display: SOFA organs by subscore, the others by their signs."""
    organs: dict[Organ, OrganState] = {}
    for organ, name in _SOFA_ORGANS.items():
        value = features.get(name)
        subscore = None if value is None else int(value)
        organs[organ] = OrganState(
            status=_status(subscore),
            subscore=subscore,
            reason=None if subscore is not None else "input missing or stale",
        )
    lactate, map_median = features.get("lactate_mmol_l"), features.get("map_median_1min_mmhg")
    if lactate is None and map_median is None:
        perfusion = OrganState(status="unknown", reason="no MAP or lactate")
    elif (lactate or 0) >= 4 or (map_median is not None and map_median < 55):
        perfusion = OrganState(status="failing", reason="lactate >= 4 or MAP < 55")
    elif (lactate or 0) > 2 or (map_median is not None and map_median < 65):
        perfusion = OrganState(status="impaired", reason="lactate > 2 or MAP < 65")
    else:
        perfusion = OrganState(status="normal")
    organs[Organ.PERFUSION] = perfusion
    cvp, balance = features.get("cvp_median_5min_mmhg"), features.get("fluid_balance_24h_ml")
    rvd = features.get("rvd_grade")
    if cvp is None and rvd is None:
        congestion = OrganState(status="unknown", reason="no CVP or renal venous Doppler")
    elif rvd == 2 or (cvp is not None and cvp >= 12 and (balance or 0) > 2000):
        congestion = OrganState(status="failing", reason="monophasic RVD or CVP >= 12 with +2 L")
    elif rvd == 1 or (cvp is not None and cvp >= 12):
        congestion = OrganState(status="impaired", reason="biphasic RVD or CVP >= 12")
    else:
        congestion = OrganState(status="normal")
    organs[Organ.CONGESTION] = congestion
    rso2, drop = features.get("rso2_min_pct"), features.get("rso2_drop_from_baseline_pct")
    if rso2 is None:
        brain = OrganState(status="unknown", age_s=ages.get("brain"), reason="no rSO2")
    elif rso2 < 50 or (drop is not None and drop > 20):
        brain = OrganState(status="failing", reason="rSO2 < 50% or > 20% below baseline")
    elif drop is not None and drop > 10:
        brain = OrganState(status="impaired", reason="rSO2 > 10% below baseline")
    else:
        brain = OrganState(status="normal")
    organs[Organ.BRAIN] = brain
    return organs
