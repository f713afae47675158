"""The rules file: thresholds, delays and priorities, validated at start.

>>> rules = load_rules()
>>> rule = rules.get("perfusion.map_low")
>>> rule.threshold, rule.on_delay_s, rule.priority.value
(65.0, 300.0, 'medium')
>>> rule.onset(62.0), rule.resolved(62.0), rule.onset(None)
(True, False, None)
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.alerts import AlertPriority
from streams.alarm import AlarmTiming

KNOWN_FEATURES = frozenset({"map_median_1min_mmhg"})
"""Features the worker computes today; a rule on anything else is refused at start."""


class RulesError(ValueError):
    """The rules file is missing, unreadable or invalid."""


class ThresholdRule(BaseModel):
    """Alarm when a feature stays beyond a threshold for an on-delay."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: str = Field(max_length=64, pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
    version: int = Field(ge=1)
    title: str = Field(min_length=3, max_length=128)
    kind: Literal["physiological", "technical"] = "physiological"
    priority: AlertPriority
    feature: str
    direction: Literal["below", "above"]
    threshold: float
    hysteresis: float = Field(default=0.0, ge=0)
    on_delay_s: float = Field(ge=0, le=86400)
    off_delay_s: float = Field(ge=0, le=86400)
    source: str = Field(min_length=10, description="Clinical source (CLINICAL.md section)")

    @model_validator(mode="after")
    def _known_feature(self) -> Self:
        if self.feature not in KNOWN_FEATURES:
            raise ValueError(f"unknown feature {self.feature!r}; known: {sorted(KNOWN_FEATURES)}")
        return self

    @property
    def timing(self) -> AlarmTiming:
        return AlarmTiming(self.on_delay_s, self.off_delay_s)

    def onset(self, value: float | None) -> bool | None:
        """The raise condition; None when the feature is unknown."""
        if value is None:
            return None
        return value < self.threshold if self.direction == "below" else value > self.threshold

    def resolved(self, value: float | None) -> bool | None:
        """The clear condition, past the hysteresis band; None when unknown."""
        if value is None:
            return None
        if self.direction == "below":
            return value >= self.threshold + self.hysteresis
        return value <= self.threshold - self.hysteresis

    @property
    def comparator(self) -> str:
        return "<" if self.direction == "below" else ">"


class RuleSet(BaseModel):
    """All rules of one deployment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: tuple[ThresholdRule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        ids = [r.id for r in self.rule]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule ids: {duplicates}")
        return self

    def get(self, rule_id: str) -> ThresholdRule:
        for rule in self.rule:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


def load_rules(path: Path | None = None) -> RuleSet:
    """Load and validate a rules file (the packaged default when ``path`` is None)."""
    where = str(path) if path else "streams/rules/default.toml"
    try:
        if path is None:
            text = resources.files("streams").joinpath("rules/default.toml").read_text()
        else:
            text = path.read_text(encoding="utf-8")
        return RuleSet.model_validate(tomllib.loads(text))
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"cannot read rules file {where} (UTF-8 TOML): {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"rules file {where} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        raise RulesError(f"rules file {where} is invalid:\n{exc}") from exc
