"""Which dataset a path holds, and its merged, event-time-ordered record stream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from services.ingest import Outbound
from services.replay import mimic2, mimic3, physionet2019
from services.replay.common import DEFAULT_START, Skips, merge_patients


class UnknownSourceError(ValueError):
    """The path is none of the datasets the replay knows."""


PHYSIONET_SUFFIXES: tuple[str, ...] = (".zip", ".psv", ".tar", ".tgz", ".tbz2", ".txz")
PHYSIONET_SUFFIXES += tuple(".tar" + c for c in (".gz", ".bz2", ".xz"))


def sniff(path: Path) -> str:
    """``physionet2019``, ``mimic3`` or ``mimic2`` from what the path holds.

    >>> sniff(Path("/work/shared/data/physionet2019/setA.psv.tar.gz"))
    'physionet2019'
    """
    if path.is_dir():
        if (path / "chartevents.csv.gz").exists() and (path / "icustays.csv.gz").exists():
            return "mimic3"
        if any(path.rglob("*.psv")):
            return "physionet2019"
    elif path.name.endswith(PHYSIONET_SUFFIXES):
        return "physionet2019"
    elif path.suffix == ".csv":
        with path.open() as handle:
            if handle.readline().startswith("minute,"):
                return "mimic2"
    raise UnknownSourceError(
        f"{path}: not PhysioNet 2019 (.psv files, a folder or a .zip/.tar.gz of them), a"
        " MIMIC-III folder (chartevents.csv.gz, icustays.csv.gz) or a MIMIC-II numerics .csv"
    )


@dataclass
class ReplaySource:
    """A dataset opened for replay: its kind, patients, and merged record stream."""

    kind: str
    patients: int
    records: Iterator[Outbound]
    skips: Skips = field(default_factory=Skips)


def open_source(
    path: Path,
    *,
    start: datetime = DEFAULT_START,
    patients: int | None = None,
    only: frozenset[str] | None = None,
) -> ReplaySource:
    """Open ``path``: every patient's stream, merged by (event time, patient, seq).

    ``start`` is the anchor (ICU admission, or record start for MIMIC-II); ``patients``
    keeps the first N patients by id; ``only`` keeps these patient ids.
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    kind = sniff(path)
    skips = Skips()
    if kind == "physionet2019":
        streams = physionet2019.read_source(path, start, limit=patients, only=only, skips=skips)
    elif kind == "mimic3":
        streams = mimic3.read_source(path, start, limit=patients, only=only, skips=skips)
    else:
        pid = mimic2.patient_id_of(path)
        wanted = (only is None or pid in only) and patients != 0
        streams = mimic2.read_source(path, start, skips) if wanted else []
    return ReplaySource(kind, len(streams), merge_patients(streams), skips)


TOPICS_BY_KIND: dict[str, tuple[str, ...]] = {
    "physionet2019": ("vitals", "labs", "context"),
    "mimic3": ("vitals", "labs", "context", "crrt"),
    "mimic2": ("vitals", "context"),
}
"""The raw topics each dataset writes to (checked before publishing)."""
