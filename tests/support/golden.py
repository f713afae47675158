"""Golden files of JSON lines: read, (re)write, and a readable first difference.

A golden test compares what the code produces now with a reviewed file in
``tests/data/golden/``. ``VIGIL_REGENERATE_GOLDEN=1`` makes it rewrite the file
instead (then review the change with ``git diff``).

>>> expected = [{"rule_id": "a", "phase": "start", "patient_id": "p", "triggered_at": "t1"}]
>>> describe_difference(expected, list(expected)) is None
True
>>> print(describe_difference(expected, [dict(expected[0], phase="end")]))
alert timeline differs from the golden file at event #0 (1 expected, 1 actual)
  event #0 fields: phase: 'start' -> 'end'
  expected from #0:
    #0 t1 p a start
  actual from #0:
    #0 t1 p a end
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REGENERATE_ENV = "VIGIL_REGENERATE_GOLDEN"
GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "golden"

Row = dict[str, Any]


def regenerating() -> bool:
    """True when the run should rewrite golden files (``VIGIL_REGENERATE_GOLDEN=1``)."""
    return os.environ.get(REGENERATE_ENV, "") == "1"


def read_jsonl(path: Path) -> list[Row]:
    rows: list[Row] = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def write_jsonl(path: Path, rows: Sequence[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
    path.write_text(text)


def normalise(rows: Sequence[Row]) -> list[Row]:
    """Rows as they read back from a golden file (tuples become lists, and so on)."""
    return [json.loads(json.dumps(row, allow_nan=False)) for row in rows]


def summary(index: int, row: Row) -> str:
    """One event in a line: index, trigger time, patient, rule, phase."""
    fields = (row.get(k) for k in ("triggered_at", "patient_id", "rule_id", "phase"))
    return f"#{index} " + " ".join(str(f) for f in fields)


def describe_difference(
    expected: Sequence[Row], actual: Sequence[Row], *, context: int = 6
) -> str | None:
    """None when equal; else where they first differ and the events from there on."""
    first = next(
        (i for i, (e, a) in enumerate(zip(expected, actual, strict=False)) if e != a),
        min(len(expected), len(actual)),
    )
    if first == len(expected) == len(actual):
        return None
    lines = [
        f"alert timeline differs from the golden file at event #{first} "
        f"({len(expected)} expected, {len(actual)} actual)"
    ]
    if first < len(expected) and first < len(actual):
        want, got = expected[first], actual[first]
        names = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        changes = "; ".join(f"{k}: {want.get(k)!r} -> {got.get(k)!r}" for k in names[:8])
        lines.append(f"  event #{first} fields: {changes}")
    for label, rows in (("expected", expected), ("actual", actual)):
        lines.append(f"  {label} from #{first}:")
        shown = rows[first : first + context]
        lines += [f"    {summary(first + i, row)}" for i, row in enumerate(shown)]
        if not shown:
            lines.append("    (no more events)")
    return "\n".join(lines)
