"""A simulated ICU: 1 Hz vital signs per bed, with scripted episodes and ground truth.

The physiology is a seeded, pure function of (seed, bed, second), so the same
arguments give the same samples at any publishing speed: replay is deterministic.
Each bed has its own random stream, so adding beds does not change the others.

Vital signs follow a mean-reverting (AR(1)) drift around per-patient baselines
drawn from adult ICU ranges, plus measurement noise. A scripted hypotension
episode ramps MAP down to a nadir (with SBP/DBP following and a compensatory
tachycardia), holds it, and ramps back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from schemas.codes import Quantity
from schemas.common import SourceInfo
from schemas.observations import Measurement, VitalSigns

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HypotensionEpisode:
    """MAP falls to ``nadir_map_mmhg`` from ``onset_s`` for ``duration_s`` (ramps included)."""

    bed_index: int  # 1-based
    onset_s: float = 120.0
    duration_s: float = 600.0
    nadir_map_mmhg: float = 56.0
    ramp_s: float = 30.0
    hr_rise_per_min: float = 22.0

    def depth(self, t_s: float) -> float:
        """Fraction (0..1) of the episode's full depth at second ``t_s``.

        >>> e = HypotensionEpisode(1, onset_s=100, duration_s=200, ramp_s=20)
        >>> [e.depth(t) for t in (99, 100, 110, 120, 250, 290, 300)]
        [0.0, 0.0, 0.5, 1.0, 1.0, 0.5, 0.0]
        """
        rel = t_s - self.onset_s
        if rel <= 0 or rel >= self.duration_s:
            return 0.0
        return min(1.0, rel / self.ramp_s, (self.duration_s - rel) / self.ramp_s)


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


def patient_id_of(bed_index: int) -> str:
    return f"sim-{bed_index:03d}"


@dataclass
class _BedPhysiology:
    """Per-bed baselines and AR(1) state; the random stream is the bed's own."""

    bed_index: int
    rng: np.random.Generator
    hr: float
    map_mmhg: float
    pulse_pressure: float
    spo2: float
    resp_rate: float
    temp_c: float
    drift: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls, seed: int, bed_index: int) -> _BedPhysiology:
        rng = np.random.default_rng([seed, bed_index])
        return cls(
            bed_index=bed_index,
            rng=rng,
            hr=float(np.clip(rng.normal(82, 8), 62, 105)),
            map_mmhg=float(np.clip(rng.normal(84, 5), 76, 96)),
            pulse_pressure=float(np.clip(rng.normal(45, 6), 32, 60)),
            spo2=float(np.clip(rng.normal(97, 1), 94, 99.5)),
            resp_rate=float(np.clip(rng.normal(16, 2), 11, 21)),
            temp_c=float(np.clip(rng.normal(37.0, 0.3), 36.3, 37.8)),
            drift={"hr": 0.0, "map": 0.0, "spo2": 0.0, "rr": 0.0, "temp": 0.0},
        )

    def _ar(self, name: str, sd: float, phi: float = 0.995) -> float:
        self.drift[name] = phi * self.drift[name] + float(self.rng.normal(0, sd))
        return self.drift[name]

    def tick(self, depth: float, episode: HypotensionEpisode | None) -> dict[Quantity, float]:
        hr = self.hr + self._ar("hr", 0.25) + float(self.rng.normal(0, 1.0))
        map_mmhg = self.map_mmhg + self._ar("map", 0.12) + float(self.rng.normal(0, 1.0))
        if episode is not None and depth > 0:
            map_mmhg -= depth * (self.map_mmhg - episode.nadir_map_mmhg)
            hr += depth * episode.hr_rise_per_min
        pp = self.pulse_pressure * (1 - 0.3 * depth) + float(self.rng.normal(0, 1.0))
        sys_mmhg, dia_mmhg = map_mmhg + 2 * pp / 3, map_mmhg - pp / 3
        spo2 = min(100.0, self.spo2 + self._ar("spo2", 0.03) + float(self.rng.normal(0, 0.4)))
        rr = self.resp_rate + self._ar("rr", 0.05) + float(self.rng.normal(0, 0.6)) + 4 * depth
        temp = self.temp_c + self._ar("temp", 0.002) + float(self.rng.normal(0, 0.02))
        return {
            Quantity.HEART_RATE: round(hr),
            Quantity.ABP_SYS: round(sys_mmhg),
            Quantity.ABP_DIA: round(dia_mmhg),
            Quantity.ABP_MEAN: round(map_mmhg),
            Quantity.SPO2: round(spo2),
            Quantity.RESP_RATE: round(rr),
            Quantity.TEMPERATURE: round(temp, 1),
        }


def simulate(
    config: SimulationConfig, clock: Clock = wall_clock
) -> Iterator[tuple[int, list[VitalSigns]]]:
    """Yield ``(second, samples)``: one VitalSigns per bed per simulated second."""
    beds = [_BedPhysiology.create(config.seed, i) for i in range(1, config.beds + 1)]
    episodes: dict[int, list[HypotensionEpisode]] = {}
    for ep in config.episodes:
        episodes.setdefault(ep.bed_index, []).append(ep)
    second = 0
    while config.duration_s is None or second < config.duration_s:
        observed_at = config.start + timedelta(seconds=second)
        received_at = clock()
        batch = []
        for bed in beds:
            # the deepest of the bed's episodes at this second (episodes may overlap)
            depth, episode = max(
                ((e.depth(second), e) for e in episodes.get(bed.bed_index, ())),
                default=(0.0, None),
                key=lambda pair: pair[0],
            )
            values = bed.tick(depth, episode)
            device = f"sim-monitor-{bed.bed_index:03d}"
            batch.append(
                VitalSigns(
                    patient_id=patient_id_of(bed.bed_index),
                    bed=f"{config.care_unit}-{bed.bed_index:02d}",
                    care_unit=config.care_unit,
                    source=SourceInfo(adapter="simulator", device_id=device),
                    received_at=received_at,
                    measurements=tuple(
                        Measurement.of(q, v, observed_at, device_id=device)
                        for q, v in values.items()
                    ),
                )
            )
        yield second, batch
        second += 1


@dataclass(frozen=True)
class TruthAnnotation:
    """What the simulator did to a patient, in event time, for scoring alerts."""

    scenario: str
    patient_id: str
    bed: str
    onset: str  # ISO 8601 UTC
    end: str


def ground_truth(config: SimulationConfig) -> list[TruthAnnotation]:
    def iso(seconds: float) -> str:
        return (config.start + timedelta(seconds=seconds)).astimezone(UTC).isoformat()

    return [
        TruthAnnotation(
            scenario="hypotension",
            patient_id=patient_id_of(e.bed_index),
            bed=f"{config.care_unit}-{e.bed_index:02d}",
            onset=iso(e.onset_s),
            end=iso(e.onset_s + e.duration_s),
        )
        for e in config.episodes
    ]


def write_ground_truth(config: SimulationConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for annotation in ground_truth(config):
            out.write(json.dumps(asdict(annotation)) + "\n")
