"""CRRT circuit features: pump state, delivered dose, downtime, net UF, clotting trends.

Source: CLINICAL.md "CRRT circuit": delivered effluent dose 20-25 mL/kg/h (KDIGO
2012 AKI guideline, 5.8.4), computed from the effluent rate and downtime; net
ultrafiltration > 1.75 mL/kg/h associated with higher mortality (Naorungroj,
Intensive Care Med 2021); clotting announced by a rising pre-filter pressure and
filter pressure drop (better than TMP; TMP >= 260 mmHg used as critical); blood
pump stopped > 60 s advisory (a circuit can clot within about 5 min).

Inputs (CRRT topic, a status every 10-60 s): ``CRRT_BLOOD_FLOW`` (mL/min),
``CRRT_EFFLUENT_RATE`` and ``CRRT_NET_UF_RATE`` (mL/h), ``CRRT_PREFILTER_PRESSURE``,
``CRRT_FILTER_PRESSURE_DROP`` and ``CRRT_TMP`` (mm[Hg]).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from schemas.codes import Quantity
from schemas.context import PatientContext
from streams.features.base import Features, PatientFacts
from streams.features.windows import DAY_S, HOUR_S, MinuteBuckets, StepIntegral

STATUS_STALE_S = 300.0
"""A CRRT value older than 5 min is unknown (statuses come every 10-60 s)."""
INTEGRAL_MAX_HOLD_S = 300.0
"""A rate holds for at most 5 min after the last status (a silent machine is not credited)."""
DOSE_WINDOW_S = DAY_S
DOSE_MIN_THERAPY_S = HOUR_S
"""No delivered dose before 1 h of therapy (a few minutes' dose is noise, not a dose)."""
TREND_WINDOW_S = 3600.0
TREND_MIN_MINUTES = 10
EPISODE_GAP_S = DAY_S
"""Blood flow after >= 24 h without flow starts a new therapy episode."""
_MIN_PER_H = 60.0  # "rate" of the downtime integral while the pump is stopped

_PRESSURES = {
    Quantity.CRRT_PREFILTER_PRESSURE: "prefilter",
    Quantity.CRRT_FILTER_PRESSURE_DROP: "filter_drop",
    Quantity.CRRT_TMP: "tmp",
}
_LATEST = (
    Quantity.CRRT_BLOOD_FLOW,
    Quantity.CRRT_EFFLUENT_RATE,
    Quantity.CRRT_NET_UF_RATE,
    *_PRESSURES,
)


CIRCUIT_CHANGE_S = 300.0
"""A blood pump stopped this long is taken as a circuit change: pressure trends restart
(the circuit can clot within about 5 min of stopping, CLINICAL.md "CRRT circuit")."""


class CrrtCircuitFeatures:
    """CRRT circuit features from the machine's status messages.

    - ``crrt_blood_flow_ml_min``: latest blood flow within 5 min.
    - ``crrt_running`` 1/0 and ``crrt_blood_pump_stopped_s`` (0 while running,
      else seconds since the first status with flow 0 after flow > 0): None when
      the latest blood flow is > 5 min old or the patient was never seen on CRRT
      (flow > 0).
    - ``crrt_effluent_dose_ml_kg_h``: delivered dose, the integral of the effluent
      rate *only while the blood pump runs* (each status holds for at most 5 min)
      over the last 24 h of therapy (since the episode's first flow > 0 if
      shorter) / hours / ``facts.weight_kg``. None without weight, before 1 h of
      therapy, or when the patient has had no flow > 0 for 24 h. Silent gaps
      count in the hours but deliver nothing.
    - ``crrt_downtime_24h_min``: minutes reported with the pump stopped (flow 0)
      in that same period (no 1-h minimum; silence is not counted as downtime).
    - ``crrt_net_uf_ml_kg_h``: latest net UF rate (within 5 min) / weight.
    - Pressures (pre-filter, filter pressure drop, TMP): the latest within 5 min;
      each trend is the least-squares slope of the per-minute means over the
      last 60 complete minutes in mm[Hg]/h, None with fewer than 10 covered
      minutes or when the pressure is stale. A machine that sends no filter pressure drop gets
      None: it is not derived from pre-filter and return/effluent pressures
      (vendors define the drop over different points).

    References: CLINICAL.md "CRRT circuit"; KDIGO 2012; Naorungroj 2021.

    >>> c = CrrtCircuitFeatures()
    >>> for s in range(0, 2 * 3600 + 1, 30):  # 2 h at 150 mL/min, 2100 mL/h effluent
    ...     stopped = 3600 <= s < 3600 + 600  # except 10 min stopped
    ...     c.observe(Quantity.CRRT_BLOOD_FLOW, float(s), 0.0 if stopped else 150.0)
    ...     c.observe(Quantity.CRRT_EFFLUENT_RATE, float(s), 2100.0)
    ...     c.observe(Quantity.CRRT_NET_UF_RATE, float(s), 140.0)
    >>> f = c.features(7200.0, PatientFacts(weight_kg=70.0))
    >>> f["crrt_running"], f["crrt_blood_pump_stopped_s"], f["crrt_downtime_24h_min"]
    (1.0, 0.0, 10.0)
    >>> f["crrt_effluent_dose_ml_kg_h"]  # 2100 x (110/60) h / 2 h / 70 kg
    27.5
    >>> f["crrt_net_uf_ml_kg_h"]
    2.0
    >>> c.on_crrt(7200.0), c.features(7200.0 + 301, PatientFacts())["crrt_running"]
    (True, None)
    """

    quantities: ClassVar[frozenset[Quantity]] = frozenset(
        {
            Quantity.CRRT_BLOOD_FLOW,
            Quantity.CRRT_EFFLUENT_RATE,
            Quantity.CRRT_FILTER_PRESSURE_DROP,
            Quantity.CRRT_NET_UF_RATE,
            Quantity.CRRT_PREFILTER_PRESSURE,
            Quantity.CRRT_TMP,
        }
    )
    """The measurements this group reads (the caller routes only these to it)."""

    def __init__(self) -> None:
        self.latest: dict[Quantity, tuple[float, float]] = {}
        self.therapy_start_s: float | None = None
        self.last_running_s: float | None = None
        self.stopped_since_s: float | None = None
        self.effluent = StepIntegral(horizon_h=25, max_hold_s=INTEGRAL_MAX_HOLD_S)
        self.downtime = StepIntegral(horizon_h=25, max_hold_s=INTEGRAL_MAX_HOLD_S)
        self.trends: dict[str, MinuteBuckets] = {
            name: MinuteBuckets(60) for name in _PRESSURES.values()
        }
        self.trend_count: dict[str, int] = dict.fromkeys(_PRESSURES.values(), 0)
        self._trend_cache: dict[str, tuple[tuple[int, int], float | None]] = {}

    # --- inputs -------------------------------------------------------------------

    def observe(self, quantity: Quantity, at_s: float, value: float) -> None:
        if quantity not in _LATEST:
            return
        previous = self.latest.get(quantity)
        if previous is None or at_s >= previous[0]:
            self.latest[quantity] = (at_s, value)
        if quantity is Quantity.CRRT_BLOOD_FLOW:
            self._blood_flow(at_s, value)
        elif quantity is Quantity.CRRT_EFFLUENT_RATE:
            self._integrate(at_s)
        elif quantity in _PRESSURES and self.stopped_since_s is None:
            # Pressures of a stopped circuit (about 0) are no filter trend: left out.
            name = _PRESSURES[quantity]
            self.trends[name].add(at_s, value)
            self.trend_count[name] += 1

    def _blood_flow(self, at_s: float, flow: float) -> None:
        if flow > 0:
            if self.stopped_since_s is not None and at_s - self.stopped_since_s >= CIRCUIT_CHANGE_S:
                # stopped long enough for a new circuit: the old filter's trend is over
                self.trends = {name: MinuteBuckets(60) for name in _PRESSURES.values()}
            if self.last_running_s is None or at_s - self.last_running_s >= EPISODE_GAP_S:
                self.therapy_start_s = at_s
                self.effluent = StepIntegral(horizon_h=25, max_hold_s=INTEGRAL_MAX_HOLD_S)
                self.downtime = StepIntegral(horizon_h=25, max_hold_s=INTEGRAL_MAX_HOLD_S)
            self.last_running_s = at_s
            self.stopped_since_s = None
        elif self.last_running_s is not None and self.stopped_since_s is None:
            self.stopped_since_s = at_s
        self._integrate(at_s)

    def _fresh(self, quantity: Quantity, at_s: float) -> float | None:
        found = self.latest.get(quantity)
        if found is None or at_s - found[0] > STATUS_STALE_S:
            return None
        return found[1]

    def _integrate(self, at_s: float) -> None:
        """Re-set both step integrals at a status: effluent only while the pump runs."""
        if self.therapy_start_s is None:
            return
        flow = self._fresh(Quantity.CRRT_BLOOD_FLOW, at_s)
        if flow is None:
            return
        running = flow > 0
        effluent = self._fresh(Quantity.CRRT_EFFLUENT_RATE, at_s)
        self.effluent.set(at_s, effluent if running and effluent is not None else 0.0)
        self.downtime.set(at_s, 0.0 if running else _MIN_PER_H)

    def observe_context(self, event: PatientContext, at_s: float) -> None:
        """No context event feeds the circuit features (weight comes in ``facts``)."""

    # --- outputs ------------------------------------------------------------------

    def on_crrt(self, at_s: float) -> bool:
        """True when blood flow > 0 was seen in the 24 h before ``at_s``."""
        return self.last_running_s is not None and at_s - self.last_running_s <= DAY_S

    def _trend(self, name: str, at_s: float) -> float | None:
        """Slope over the 60 complete minutes before ``at_s``'s minute, cached per minute.

        Only complete minutes are used, so the least squares run once per minute
        (not at every status); the key also counts the samples of those minutes,
        so a late sample for a past minute is never served from a stale cache.
        """
        buckets = self.trends[name]
        at_minute = int(at_s // 60)
        count = self.trend_count[name]
        if buckets.last_t is not None and int(buckets.last_t // 60) >= at_minute:
            current = buckets.buckets.get(int(buckets.last_t // 60))
            if int(buckets.last_t // 60) > at_minute or current is None:
                # asked about the past: not cached
                return buckets.slope_per_h(
                    at_minute * 60.0 - 0.5, TREND_WINDOW_S, TREND_MIN_MINUTES
                )
            count -= int(current[0])
        key = (at_minute, count)
        cached = self._trend_cache.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        slope = buckets.slope_per_h(at_minute * 60.0 - 0.5, TREND_WINDOW_S, TREND_MIN_MINUTES)
        self._trend_cache[name] = (key, slope)
        return slope

    def features(self, at_s: float, facts: PatientFacts) -> Features:
        weight = facts.weight_kg if facts.weight_kg is not None and facts.weight_kg > 0 else None
        flow = self._fresh(Quantity.CRRT_BLOOD_FLOW, at_s)
        running: float | None = None
        stopped_s: float | None = None
        if flow is not None and self.last_running_s is not None:
            running = 1.0 if flow > 0 else 0.0
            if flow > 0:
                stopped_s = 0.0
            elif self.stopped_since_s is not None:
                stopped_s = max(0.0, at_s - self.stopped_since_s)
        dose: float | None = None
        downtime: float | None = None
        if self.therapy_start_s is not None and self.on_crrt(at_s):
            elapsed = at_s - self.therapy_start_s
            start = at_s - DOSE_WINDOW_S if elapsed > DOSE_WINDOW_S else -float("inf")
            downtime = self.downtime.total(at_s, at_s - start)
            if weight is not None and elapsed >= DOSE_MIN_THERAPY_S:
                hours = min(elapsed, DOSE_WINDOW_S) / HOUR_S
                dose = self.effluent.total(at_s, at_s - start) / hours / weight
        net_uf = self._fresh(Quantity.CRRT_NET_UF_RATE, at_s)
        pressures = {name: self._fresh(quantity, at_s) for quantity, name in _PRESSURES.items()}
        trends = {
            name: self._trend(name, at_s) if value is not None else None
            for name, value in pressures.items()
        }
        return {
            "crrt_running": running,
            "crrt_blood_flow_ml_min": flow,
            "crrt_blood_pump_stopped_s": stopped_s,
            "crrt_effluent_dose_ml_kg_h": dose,
            "crrt_downtime_24h_min": downtime,
            "crrt_net_uf_ml_kg_h": (
                net_uf / weight if net_uf is not None and weight is not None else None
            ),
            "crrt_prefilter_pressure_mmhg": pressures["prefilter"],
            "crrt_prefilter_trend_mmhg_h": trends["prefilter"],
            "crrt_filter_pressure_drop_mmhg": pressures["filter_drop"],
            "crrt_filter_pressure_drop_trend_mmhg_h": trends["filter_drop"],
            "crrt_tmp_mmhg": pressures["tmp"],
            "crrt_tmp_trend_mmhg_h": trends["tmp"],
        }

    # --- state --------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "latest": {q.value: [t, v] for q, (t, v) in self.latest.items()},
            "start": self.therapy_start_s,
            "run": self.last_running_s,
            "stop": self.stopped_since_s,
            "eff": self.effluent.to_state(),
            "down": self.downtime.to_state(),
            "trends": {name: b.to_state() for name, b in self.trends.items()},
            "counts": dict(self.trend_count),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        crrt = cls()
        crrt.latest = {Quantity(q): (float(t), float(v)) for q, (t, v) in state["latest"].items()}
        crrt.therapy_start_s = state["start"]
        crrt.last_running_s = state["run"]
        crrt.stopped_since_s = state["stop"]
        crrt.effluent = StepIntegral.from_state(state["eff"])
        crrt.downtime = StepIntegral.from_state(state["down"])
        crrt.trends = {name: MinuteBuckets.from_state(b) for name, b in state["trends"].items()}
        crrt.trend_count = {name: int(n) for name, n in state["counts"].items()}
        return crrt
