"""The rules file: conditions, delays and priorities, validated at start.

A rule names its condition as a tree of clauses over the features of
``streams.features.catalog.FEATURES``; the alarm engine (``streams.alarm``) runs
each rule through its state machine. Conditions use three-valued (Kleene) logic:
a clause on an unknown feature (``None``) is unknown, and ``all`` / ``any``
combine like SQL NULL logic, so missing data neither raises nor clears an alarm
(DESIGN.md "Unknown is not normal").

>>> rules = load_rules()
>>> rule = rules.get("perfusion.map_low")
>>> rule.on_delay_s, rule.priority.value, rule.escalation.priority.value
(300.0, 'medium', 'high')
>>> rule.onset({"map_median_1min_mmhg": 62.0}), rule.onset({"map_median_1min_mmhg": None})
(True, None)

The clear condition moves every threshold by its hysteresis to the safe side:
``MAP < 65`` with hysteresis 2 is resolved only at ``MAP >= 67``.

>>> rule.resolved({"map_median_1min_mmhg": 66.0}), rule.resolved({"map_median_1min_mmhg": 67.0})
(False, True)
>>> for line in rule.condition.trace({"map_median_1min_mmhg": 62.0}):
...     print(line)
map_median_1min_mmhg 62 < 65 -> true
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.alerts import AlertPriority
from streams.features.catalog import FEATURES

Features = Mapping[str, float | None]
"""Feature values by catalogue name; a missing name or ``None`` is unknown."""

Op = Literal["<", "<=", ">", ">=", "==", "!="]

PRIORITY_RANK: Mapping[AlertPriority, int] = {
    AlertPriority.LOW: 1,
    AlertPriority.MEDIUM: 2,
    AlertPriority.HIGH: 3,
}
"""IEC 60601-1-8 order of priorities: higher is more urgent."""

_CITATION = re.compile(r"CLINICAL\.md|\b(19|20)\d{2}\b")
"""A source names CLINICAL.md, or cites a work by its year (e.g. "Chawla 2013")."""


class RulesError(ValueError):
    """The rules file is missing, unreadable or invalid."""


def _truth(value: bool | None) -> str:
    return "unknown" if value is None else str(value).lower()


def _num(value: float | None) -> str:
    return "unknown" if value is None else f"{value:g}"


def kleene_all(values: Iterable[bool | None]) -> bool | None:
    """AND of three-valued truths: false wins, then unknown.

    >>> kleene_all([True, None]), kleene_all([False, None]), kleene_all([True, True])
    (None, False, True)
    """
    unknown = False
    for value in values:
        if value is False:
            return False
        if value is None:
            unknown = True
    return None if unknown else True


def kleene_any(values: Iterable[bool | None]) -> bool | None:
    """OR of three-valued truths: true wins, then unknown.

    >>> kleene_any([False, None]), kleene_any([True, None]), kleene_any([False, False])
    (None, True, False)
    """
    unknown = False
    for value in values:
        if value is True:
            return True
        if value is None:
            unknown = True
    return None if unknown else False


def kleene_not(value: bool | None) -> bool | None:
    return None if value is None else not value


def _check_feature(name: str) -> str:
    if name not in FEATURES:
        close = difflib.get_close_matches(name, list(FEATURES), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown feature {name!r}{hint} (features: streams/features/catalog.py)")
    return name


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Clause(_Node):
    """``feature op value``; cleared past ``value`` moved by ``hysteresis`` to the safe side.

    >>> c = Clause(feature="lactate_mmol_l", op=">", value=2.0, hysteresis=0.5)
    >>> c.holds({"lactate_mmol_l": 2.2}), c.holds({"lactate_mmol_l": 2.2}, cleared=True)
    (True, True)
    >>> c.holds({"lactate_mmol_l": 1.5}, cleared=True)
    False
    """

    feature: str
    op: Op
    value: float
    hysteresis: float = Field(default=0.0, ge=0)

    @field_validator("feature")
    @classmethod
    def _known_feature(cls, name: str) -> str:
        return _check_feature(name)

    @model_validator(mode="after")
    def _hysteresis_needs_an_order(self) -> Self:
        if self.hysteresis and self.op in ("==", "!="):
            raise ValueError(f"hysteresis needs an ordered op (<, <=, >, >=), not {self.op!r}")
        return self

    def threshold(self, cleared: bool = False) -> float:
        """The threshold; with ``cleared``, moved by the hysteresis to the safe side."""
        if not cleared or not self.hysteresis:
            return self.value
        return (
            self.value + self.hysteresis if self.op in ("<", "<=") else self.value - self.hysteresis
        )

    def holds(self, features: Features, cleared: bool = False) -> bool | None:
        x = features.get(self.feature)
        if x is None:
            return None
        t = self.threshold(cleared)
        match self.op:
            case "<":
                return x < t
            case "<=":
                return x <= t
            case ">":
                return x > t
            case ">=":
                return x >= t
            case "==":
                return x == t
            case _:
                return x != t

    def trace(self, features: Features, cleared: bool = False, indent: str = "") -> list[str]:
        t = self.threshold(cleared)
        shifted = (
            f" ({self.value:g} {'+' if t > self.value else '-'} hysteresis {self.hysteresis:g})"
            if t != self.value
            else ""
        )
        x = features.get(self.feature)
        truth = _truth(self.holds(features, cleared))
        return [f"{indent}{self.feature} {_num(x)} {self.op} {t:g}{shifted} -> {truth}"]

    def clauses(self) -> Iterator[Clause | KnownClause]:
        yield self


class KnownClause(_Node):
    """``known = false``: true iff the feature is unknown (``known = true``: iff known).

    Never unknown itself: it is how a rule speaks about missing data.

    >>> KnownClause(feature="arterial_line_data_age_s", known=False).holds({})
    True
    """

    feature: str
    known: bool

    @field_validator("feature")
    @classmethod
    def _known_feature(cls, name: str) -> str:
        return _check_feature(name)

    def holds(self, features: Features, cleared: bool = False) -> bool | None:
        return (features.get(self.feature) is not None) == self.known

    def trace(self, features: Features, cleared: bool = False, indent: str = "") -> list[str]:
        x = features.get(self.feature)
        wanted = "known" if self.known else "unknown"
        return [f"{indent}{self.feature} {_num(x)} is {wanted} -> {_truth(self.holds(features))}"]

    def clauses(self) -> Iterator[Clause | KnownClause]:
        yield self


class AllOf(_Node):
    """All sub-conditions hold (Kleene AND)."""

    all: tuple[Condition, ...] = Field(min_length=1)

    def holds(self, features: Features, cleared: bool = False) -> bool | None:
        return kleene_all(c.holds(features, cleared) for c in self.all)

    def trace(self, features: Features, cleared: bool = False, indent: str = "") -> list[str]:
        lines = [f"{indent}all of -> {_truth(self.holds(features, cleared))}"]
        for c in self.all:
            lines += c.trace(features, cleared, indent + "  ")
        return lines

    def clauses(self) -> Iterator[Clause | KnownClause]:
        for c in self.all:
            yield from c.clauses()


class AnyOf(_Node):
    """At least one sub-condition holds (Kleene OR)."""

    any: tuple[Condition, ...] = Field(min_length=1)

    def holds(self, features: Features, cleared: bool = False) -> bool | None:
        return kleene_any(c.holds(features, cleared) for c in self.any)

    def trace(self, features: Features, cleared: bool = False, indent: str = "") -> list[str]:
        lines = [f"{indent}any of -> {_truth(self.holds(features, cleared))}"]
        for c in self.any:
            lines += c.trace(features, cleared, indent + "  ")
        return lines

    def clauses(self) -> Iterator[Clause | KnownClause]:
        for c in self.any:
            yield from c.clauses()


def _condition_kind(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("all", "any", "known"):
            if key in value:
                return f"<{key}>"
        return "<clause>"
    if isinstance(value, AllOf):
        return "<all>"
    if isinstance(value, AnyOf):
        return "<any>"
    return "<known>" if isinstance(value, KnownClause) else "<clause>"


Condition = Annotated[
    Annotated[Clause, Tag("<clause>")]
    | Annotated[KnownClause, Tag("<known>")]
    | Annotated[AllOf, Tag("<all>")]
    | Annotated[AnyOf, Tag("<any>")],
    Discriminator(_condition_kind),
]
"""A clause, a known-clause, or ``all`` / ``any`` of conditions, nested."""

AllOf.model_rebuild()
AnyOf.model_rebuild()


def onset(condition: Condition, features: Features) -> bool | None:
    """The condition holds (three-valued)."""
    return condition.holds(features)


def resolved(condition: Condition, features: Features) -> bool | None:
    """NOT the condition with every threshold moved by its hysteresis (three-valued).

    >>> c = AnyOf(any=(Clause(feature="spo2_pct", op="<", value=90, hysteresis=2),
    ...                Clause(feature="resp_rate_per_min", op=">", value=30)))
    >>> resolved(c, {"spo2_pct": 91, "resp_rate_per_min": 20})
    False
    >>> resolved(c, {"spo2_pct": 92, "resp_rate_per_min": 20})
    True
    >>> resolved(c, {"spo2_pct": 95}) is None  # the respiratory rate is unknown
    True
    """
    return kleene_not(condition.holds(features, cleared=True))


def _features_of(condition: Condition) -> list[str]:
    return list(dict.fromkeys(c.feature for c in condition.clauses()))


class Escalation(_Node):
    """When an active alarm becomes more urgent: after a time, or in a worse band."""

    priority: AlertPriority
    after_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    condition: Condition | None = None
    on_delay_s: float = Field(default=0.0, ge=0, le=86400)

    @model_validator(mode="after")
    def _needs_a_trigger(self) -> Self:
        if self.after_s is None and self.condition is None:
            raise ValueError("escalation needs after_s and/or condition")
        return self


class Rule(_Node):
    """One alarm rule: a condition held for an on-delay raises it at a priority."""

    id: str = Field(max_length=64, pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
    version: int = Field(ge=1)
    title: str = Field(min_length=3, max_length=128)
    kind: Literal["physiological", "technical"]
    priority: AlertPriority
    condition: Condition
    on_delay_s: float = Field(ge=0, le=86400)
    off_delay_s: float = Field(ge=0, le=86400)
    escalation: Escalation | None = None
    latching: bool = False
    reannounce_s: float | None = Field(
        default=None, ge=0, le=86400, description="Reminder interval; 0 = off; default per priority"
    )
    enabled: bool = True
    explain: tuple[str, ...] = ()
    source: str = Field(
        min_length=10, max_length=256, description="Clinical source (CLINICAL.md or a citation)"
    )

    @field_validator("explain")
    @classmethod
    def _explain_features(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            _check_feature(name)
        return names

    @field_validator("source")
    @classmethod
    def _cited(cls, source: str) -> str:
        if not _CITATION.search(source):
            raise ValueError("must name CLINICAL.md (section) or cite a source with its year")
        return source

    @model_validator(mode="after")
    def _escalation_is_higher(self) -> Self:
        esc = self.escalation
        if esc is not None and PRIORITY_RANK[esc.priority] <= PRIORITY_RANK[self.priority]:
            raise ValueError(
                f"escalation.priority {esc.priority.value!r} must be higher than"
                f" priority {self.priority.value!r}"
            )
        return self

    def onset(self, features: Features) -> bool | None:
        return onset(self.condition, features)

    def resolved(self, features: Features) -> bool | None:
        return resolved(self.condition, features)

    def band(self, features: Features) -> bool | None:
        """The escalation band holds (None when unknown or there is no band)."""
        if self.escalation is None or self.escalation.condition is None:
            return None
        return onset(self.escalation.condition, features)

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        """Every feature the condition, the escalation band and ``explain`` name."""
        names = _features_of(self.condition)
        if self.escalation is not None and self.escalation.condition is not None:
            names += _features_of(self.escalation.condition)
        return tuple(dict.fromkeys([*names, *self.explain]))

    @cached_property
    def thresholds(self) -> Mapping[str, float]:
        """Clause feature -> threshold (escalation band as ``escalation:<feature>``)."""
        found: dict[str, float] = {}

        def add(clauses: Iterable[Clause | KnownClause], prefix: str) -> None:
            for c in clauses:
                if isinstance(c, Clause):
                    key = prefix + c.feature
                    if key in found and found[key] != c.value:
                        key = f"{key} {c.op}"
                    found.setdefault(key, c.value)

        add(self.condition.clauses(), "")
        if self.escalation is not None and self.escalation.condition is not None:
            add(self.escalation.condition.clauses(), "escalation:")
        return MappingProxyType(found)


class ReannounceDefaults(_Node):
    """Reminder interval by priority, seconds of event time; 0 = no reminders.

    Defaults are unverified (IEC 60601-1-8 asks for reminder signals, not these intervals).
    """

    high: float = Field(default=120.0, ge=0, le=86400)
    medium: float = Field(default=600.0, ge=0, le=86400)
    low: float = Field(default=0.0, ge=0, le=86400)


class Defaults(_Node):
    reannounce_s: ReannounceDefaults = ReannounceDefaults()


class RuleSet(_Node):
    """All rules of one deployment (disabled rules included; they never evaluate)."""

    defaults: Defaults = Defaults()
    rule: tuple[Rule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        ids = [r.id for r in self.rule]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule ids: {duplicates}")
        return self

    def get(self, rule_id: str) -> Rule:
        for rule in self.rule:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    @cached_property
    def enabled(self) -> tuple[Rule, ...]:
        """The rules that evaluate, in file order."""
        return tuple(r for r in self.rule if r.enabled)

    @cached_property
    def enabled_ids(self) -> frozenset[str]:
        return frozenset(r.id for r in self.enabled)

    def reannounce_s(self, rule: Rule, priority: AlertPriority) -> float:
        """Reminder interval of ``rule`` at its current ``priority`` (0 = none)."""
        if rule.reannounce_s is not None:
            return rule.reannounce_s
        interval: float = getattr(self.defaults.reannounce_s, priority.value)
        return interval


_TAGS = frozenset({"<clause>", "<known>", "<all>", "<any>"})


def _field_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        if part in _TAGS:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def describe_errors(exc: ValidationError, data: Mapping[str, Any]) -> str:
    """One line per problem, naming the rule id and the field."""
    raw_rules = data.get("rule")
    errors = exc.errors()
    # a tuple whose items failed also reports being too short: say only what failed
    deeper = [e["loc"] for e in errors if e["type"] != "too_short"]
    lines = []
    for err in errors:
        loc = err["loc"]
        if err["type"] == "too_short" and any(d[: len(loc)] == loc for d in deeper):
            continue
        msg = err["msg"]
        if len(loc) >= 2 and loc[0] == "rule" and isinstance(loc[1], int):
            index = loc[1]
            rule_id = None
            if isinstance(raw_rules, list) and index < len(raw_rules):
                raw = raw_rules[index]
                rule_id = raw.get("id") if isinstance(raw, dict) else None
            name = f"rule {rule_id!r}" if rule_id else f"rule #{index + 1}"
            field = _field_path(loc[2:])
            lines.append(f"{name}: {field}: {msg}" if field else f"{name}: {msg}")
        else:
            field = _field_path(loc)
            lines.append(f"{field}: {msg}" if field else msg)
    return "\n".join(f"  - {line}" for line in lines)


def parse_rules(text: str, where: str = "<rules>") -> RuleSet:
    """Validate rules from TOML text; ``where`` names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"rules file {where} is not valid TOML: {exc}") from exc
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        raise RulesError(f"rules file {where} is invalid:\n{describe_errors(exc, data)}") from exc


def load_rules(path: Path | None = None) -> RuleSet:
    """Load and validate a rules file (the packaged default when ``path`` is None)."""
    where = str(path) if path else "streams/rules/default.toml"
    try:
        if path is None:
            text = resources.files("streams").joinpath("rules/default.toml").read_text("utf-8")
        else:
            text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"cannot read rules file {where} (UTF-8 TOML): {exc}") from exc
    return parse_rules(text, where)
