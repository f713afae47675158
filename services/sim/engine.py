"""The simulated ICU: beds stepped second by second into topic records, plus ground truth.

:func:`simulate_icu` is pure apart from the ``clock`` that stamps ``received_at``: the
same config gives the same records at any publishing speed, and bed ``b``'s records
depend only on ``(seed, b, b's scenarios)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas.annotations import GroundTruth
from services.ingest import Outbound
from services.sim.bed import SimulatedBed, bed_label, patient_id_of
from services.sim.physiology import organs_reached
from services.sim.scenarios import (
    DEFAULT_HORIZON_S,
    Scenario,
    default_plan,
    equipment_of,
)

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class IcuConfig:
    """A simulated ICU run. ``scenarios=None`` means the default plan (see :func:`default_plan`)."""

    beds: int = 8
    seed: int = 7
    start: datetime = field(default_factory=lambda: wall_clock().replace(microsecond=0))
    duration_s: int | None = None  # None = run until stopped
    care_unit: str = "ICU1"
    scenarios: tuple[Scenario, ...] | None = None
    run_id: str | None = None  # default: sim-<seed>-<start>

    def __post_init__(self) -> None:
        if self.beds < 1:
            raise ValueError("at least one bed")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        for s in self.plan:
            if not 1 <= s.bed <= self.beds:
                raise ValueError(f"scenario {s.name} bed {s.bed} outside 1..{self.beds}")

    @property
    def plan(self) -> tuple[Scenario, ...]:
        if self.scenarios is not None:
            return self.scenarios
        horizon = self.duration_s if self.duration_s is not None else DEFAULT_HORIZON_S
        return default_plan(self.seed, self.beds, horizon)

    @property
    def run(self) -> str:
        return self.run_id or f"sim-{self.seed}-{self.start.astimezone(UTC):%Y%m%dT%H%M%SZ}"

    def played(self) -> tuple[Scenario, ...]:
        """The scenarios that start within the run (all of them for an open-ended run)."""
        return tuple(s for s in self.plan if self.duration_s is None or s.onset_s < self.duration_s)


def ground_truth(config: IcuConfig) -> list[GroundTruth]:
    """One annotation per played scenario, in event time (UTC).

    ``organs`` are those the bed's simulated data reaches (a SOFA subscore rise of >= 1
    point by the end, :func:`services.sim.physiology.organs_reached`), not all the
    organs the scenario kind may affect.
    """
    start = config.start.astimezone(UTC)
    played = config.played()

    def organs(s: Scenario) -> tuple[str, ...]:
        own = tuple(p for p in played if p.bed == s.bed)
        return organs_reached(config.seed, s.bed, own, equipment_of(config.seed, s.bed, own), s)

    return [
        GroundTruth(
            run_id=config.run,
            patient_id=patient_id_of(s.bed),
            bed=bed_label(config.care_unit, s.bed),
            scenario=s.name,
            onset=start + timedelta(seconds=s.onset_s),
            end=start + timedelta(seconds=s.end_s),
            organs=organs(s),
            description=_describe(s),
        )
        for s in sorted(played, key=lambda s: (s.onset_s, s.bed, s.name))
    ]


def _describe(s: Scenario) -> str:
    detail = f"severity {s.severity:g}"
    if s.name in ("cerebral_desaturation", "artefact_nirs_sensor_lift"):
        detail += f", {s.side}"
    if s.name == "device_disconnect":
        detail += f", {s.device}"
    return f"{s.kind.description} ({detail})"[:256]


def write_ground_truth(config: IcuConfig, path: Path) -> None:
    """The ground truth as JSON lines (the GroundTruth model's JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for annotation in ground_truth(config):
            out.write(annotation.model_dump_json() + "\n")


def simulate_icu(
    config: IcuConfig, clock: Clock = wall_clock
) -> Iterator[tuple[int, list[Outbound]]]:
    """Yield ``(second, records)`` for every simulated second (records may be empty).

    Second 0 starts with the ground truth of the whole run (groundtruth topic), before
    any data it describes.
    """
    played = config.played()
    beds = []
    for bed in range(1, config.beds + 1):
        own = tuple(s for s in played if s.bed == bed)
        equipment = equipment_of(config.seed, bed, own)
        beds.append(SimulatedBed(config.seed, bed, config.care_unit, own, equipment))
    start = config.start.astimezone(UTC)
    second = 0
    while config.duration_s is None or second < config.duration_s:
        at = start + timedelta(seconds=second)
        received_at = clock()
        records: list[Outbound] = []
        if second == 0:
            records += [Outbound("groundtruth", g.patient_id, g) for g in ground_truth(config)]
        for bed_ in beds:
            records += bed_.step(second, at, received_at)
        yield second, records
        second += 1
