"""Vitals-only view of the simulated ICU, for code that scripts hypotension episodes.

The simulator lives in :mod:`services.sim`; this module keeps the original interface
(``SimulationConfig(episodes=...)``, ``simulate()`` yielding one VitalSigns per bed per
second) for the tests and benchmarks that feed the vitals topic directly. A config here
plays exactly its episodes (no default scenarios, no artefacts), so every bed sends a
sample every second; the physiology is the same as :func:`services.sim.simulate_icu`'s
for the same seed, bed and scenarios.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from schemas.annotations import GroundTruth
from schemas.observations import VitalSigns
from services.sim import engine
from services.sim.bed import patient_id_of
from services.sim.engine import Clock, IcuConfig, wall_clock
from services.sim.scenarios import Scenario

__all__ = [
    "HypotensionEpisode",
    "SimulationConfig",
    "ground_truth",
    "patient_id_of",
    "simulate",
    "wall_clock",
    "write_ground_truth",
]


@dataclass(frozen=True)
class HypotensionEpisode:
    """MAP falls to 56 mmHg from ``onset_s`` for ``duration_s`` (30-s ramps included)."""

    bed_index: int  # 1-based
    onset_s: float = 120.0
    duration_s: float = 600.0

    def to_scenario(self) -> Scenario:
        return Scenario("hypotension", self.bed_index, self.onset_s, self.duration_s)

    def depth(self, t_s: float) -> float:
        """Fraction (0..1) of the episode's full depth at second ``t_s``.

        >>> e = HypotensionEpisode(1, onset_s=100, duration_s=200)
        >>> [e.depth(t) for t in (99, 100, 115, 130, 250, 285, 300)]
        [0.0, 0.0, 0.5, 1.0, 1.0, 0.5, 0.0]
        """
        return max(0.0, self.to_scenario().depth(t_s, 30.0)) if self.bed_index >= 1 else 0.0


@dataclass(frozen=True)
class SimulationConfig:
    beds: int = 8
    seed: int = 7
    start: datetime = field(default_factory=lambda: wall_clock().replace(microsecond=0))
    duration_s: int | None = None  # None = run until stopped
    care_unit: str = "ICU1"
    episodes: tuple[HypotensionEpisode, ...] = (HypotensionEpisode(bed_index=1),)

    def __post_init__(self) -> None:
        if self.beds < 1:
            raise ValueError("at least one bed")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        for ep in self.episodes:
            if not 1 <= ep.bed_index <= self.beds:
                raise ValueError(f"episode bed {ep.bed_index} outside 1..{self.beds}")

    def to_icu(self) -> IcuConfig:
        return IcuConfig(
            beds=self.beds,
            seed=self.seed,
            start=self.start,
            duration_s=self.duration_s,
            care_unit=self.care_unit,
            scenarios=tuple(e.to_scenario() for e in self.episodes),
        )


def simulate(
    config: SimulationConfig, clock: Clock = wall_clock
) -> Iterator[tuple[int, list[VitalSigns]]]:
    """Yield ``(second, samples)``: one VitalSigns per bed per simulated second."""
    for second, records in engine.simulate_icu(config.to_icu(), clock):
        yield (
            second,
            [r.payload for r in records if isinstance(r.payload, VitalSigns)],
        )


def ground_truth(config: SimulationConfig) -> list[GroundTruth]:
    return engine.ground_truth(config.to_icu())


def write_ground_truth(config: SimulationConfig, path: Path) -> None:
    engine.write_ground_truth(config.to_icu(), path)
