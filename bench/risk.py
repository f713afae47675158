"""Risk learners on PhysioNet 2019 set A through the worker's feature code (no Kafka).

    nice -n 10 .venv/bin/python bench/risk.py cache ../shared/data/physionet2019/setA.psv.tar.gz
    nice -n 10 .venv/bin/python bench/risk.py compare --learners logreg,hoeffding --protocol a

``cache`` computes every patient's hourly feature snapshots with the worker's own
``PatientState`` (``services.physionet_eval.offline_snapshots``) once, into
``.cache/risk/`` (float32, NaN = unknown, with the column names: a cache made with
another feature catalogue is refused, not misread). ``compare`` then runs the risk engine
(``streams.risk.engine``) prequentially over them in event time: admissions one hour
apart in id order, each prediction published before the patient's labels arrive at
its discharge, then scored and learned. Protocol (b) first learns p000001-p010000 with
their labels (pretraining) and is scored on the rest. Prints and writes the figures
to ``test-artifacts/risk_compare_<protocol>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.physionet_eval import (  # noqa: E402
    PatientSeries,
    RowScores,
    baseline_scores,
)
from streams.risk.engine import EngineConfig, RiskEngine  # noqa: E402
from streams.risk.features import INPUT_FEATURES  # noqa: E402

CACHE = Path(os.environ.get("VIGIL_RISK_CACHE", str(ROOT / ".cache" / "risk")))
NAMES = (*INPUT_FEATURES, "vitals_data_age_s")
PRETRAIN_LAST = "p010000"


def _cache_part(args: tuple[str, list[list[str]], int]) -> str:
    """Snapshots of some chunks of patients, one ``.npz`` per chunk, written as each is done
    (so a comparison can start on the chunks finished so far)."""
    source, chunks, worker = args
    from services.replay.physionet2019 import patient_files

    wanted = frozenset(pid for chunk in chunks for pid in chunk)
    files = {f.patient_id: f for f in patient_files(Path(source), only=wanted)}
    from services.physionet_eval import offline_snapshots
    from services.replay.common import DEFAULT_START
    from streams.rules import load_rules

    rules = load_rules()
    for chunk in chunks:
        out = CACHE / f"setA_{chunk[0]}.npz"
        if out.exists():
            continue
        ids, offsets, times, labels, xs, meta = [], [0], [], [], [], []
        for pid in chunk:
            series = offline_snapshots(files[pid], DEFAULT_START, rules)
            ids.append(pid)
            times += series.times
            labels += series.labels
            for f in series.features:
                xs.append([np.nan if f.get(n) is None else f[n] for n in NAMES])
            offsets.append(len(times))
            meta.append((series.age_years, series.sex, series.admitted_at))
        tmp = out.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            ids=np.array(ids),
            offsets=np.array(offsets),
            times=np.array(times),
            labels=np.array(labels, dtype=bool),
            x=np.array(xs, dtype=np.float32).reshape(-1, len(NAMES)),
            meta=json.dumps(meta),
            names=np.array(NAMES),
        )
        os.replace(tmp, out)
        print(worker, "wrote", out.name, flush=True)
    return f"worker {worker} done"


def cache(source: str, parts: int, chunk: int = 250) -> None:
    """Chunks alternate between the first 10,000 ids and the rest, so that the two
    protocols have data early; each worker takes every ``parts``-th chunk."""
    from services.replay.physionet2019 import patient_files

    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    ids = [f.patient_id for f in patient_files(Path(source))]
    first = [ids[i : i + chunk] for i in range(0, len(ids), chunk) if ids[i] <= PRETRAIN_LAST]
    rest = [ids[i : i + chunk] for i in range(0, len(ids), chunk) if ids[i] > PRETRAIN_LAST]
    order: list[list[str]] = []
    for i in range(max(len(first), len(rest))):
        order += first[i : i + 1] + rest[i : i + 1]
    jobs = [(source, order[w::parts], w) for w in range(parts)]
    with multiprocessing.Pool(parts) as pool:
        for done in pool.imap_unordered(_cache_part, jobs):
            print(done, flush=True)
    print(f"{len(ids)} patients in {time.monotonic() - t0:.0f} s", flush=True)


class _Rows:
    """A patient's snapshot rows as feature dicts, made on demand (set A is 790k rows)."""

    def __init__(self, block: np.ndarray[Any, Any]) -> None:
        self.block = block

    def __len__(self) -> int:
        return len(self.block)

    def __getitem__(self, i: int) -> dict[str, float]:
        row = self.block[i]
        return {NAMES[j]: float(v) for j, v in enumerate(row) if not math.isnan(v)}

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))


def load_cache() -> list[PatientSeries]:
    out: list[PatientSeries] = []
    for path in sorted(CACHE.glob("setA_p*.npz")):
        if ".tmp" in path.name:
            continue
        data = np.load(path)
        names = tuple(str(n) for n in data["names"]) if "names" in data.files else None
        if names != NAMES:  # columns are read by position: another catalogue mislabels them
            raise SystemExit(
                f"{path}: cached with other features than the catalogue's "
                f"({'no names' if names is None else f'{len(names)} columns'}, "
                f"now {len(NAMES)}): delete {CACHE} and run the cache step again"
            )
        meta = json.loads(str(data["meta"]))
        offsets = data["offsets"]
        xs = data["x"]
        for n, pid in enumerate(data["ids"]):
            a, b = offsets[n], offsets[n + 1]
            feats = _Rows(xs[a:b])
            age, sex, admitted = meta[n]
            out.append(
                PatientSeries(
                    str(pid),
                    times=[float(t) for t in data["times"][a:b]],
                    features=feats,  # type: ignore[arg-type]
                    labels=[bool(v) for v in data["labels"][a:b]],
                    admitted_at=admitted,
                    age_years=age,
                    sex=sex,
                )
            )
    out.sort(key=lambda s: s.patient_id)
    return out


def run_protocol(
    series: list[PatientSeries], config: EngineConfig, protocol: str, stagger_h: float = 1.0
) -> tuple[RowScores, dict[str, Any]]:
    """Prequential run; returns per-row scores of the evaluated patients and costs."""
    import heapq

    engine = RiskEngine(config)
    train = [s for s in series if protocol == "b" and s.patient_id <= PRETRAIN_LAST]
    test = [s for s in series if not (protocol == "b" and s.patient_id <= PRETRAIN_LAST)]
    t0 = time.monotonic()
    for s in train:  # pretraining: offline, every hour with its label, in id order
        engine.on_admission(s.patient_id, s.admitted_at, s.age_years, s.sex)
        for at, f in zip(s.times, s.features, strict=True):
            engine.on_snapshot(s.patient_id, at, f)
        for at, y in zip(s.times, s.labels, strict=True):
            engine.on_label(s.patient_id, "sepsis", at, y)
        engine.on_discharge(s.patient_id, s.times[-1] if s.times else 0.0)
    pretrain_s = time.monotonic() - t0
    # online: admissions ``stagger_h`` apart, rows in event time, labels at discharge
    heap: list[tuple[float, int, int]] = []
    for n, s in enumerate(test):
        if s.times:
            heap.append((s.times[0] + n * stagger_h * 3600, n, 0))
    heapq.heapify(heap)
    probs: dict[int, list[tuple[float, float]]] = {}
    predict_s, predictions = 0.0, 0
    t1 = time.monotonic()
    while heap:
        at, n, i = heapq.heappop(heap)
        s = test[n]
        shift = n * stagger_h * 3600
        if i == len(s.times):  # discharge: labels revealed, then joined and learned
            for t, y in zip(s.times, s.labels, strict=True):
                engine.on_label(s.patient_id, "sepsis", t + shift, y)
            engine.on_discharge(s.patient_id, at)
            continue
        if i == 0:
            engine.on_admission(s.patient_id, s.admitted_at + shift, s.age_years, s.sex)
        p0 = time.perf_counter()
        pred = engine.on_snapshot(s.patient_id, at, s.features[i])
        predict_s += time.perf_counter() - p0
        predictions += 1
        probs.setdefault(n, []).append((pred.probability, pred.threshold))
        nxt = s.times[i + 1] + shift if i + 1 < len(s.times) else at + 1e-3
        heapq.heappush(heap, (nxt, n, i + 1))
    scores = RowScores()
    for n, s in enumerate(test):
        pairs = probs.get(n, [])
        scores.add(s.labels, [p for p, _ in pairs], [p >= th for p, th in pairs])
    costs = {
        "pretrain_s": round(pretrain_s, 1),
        "online_s": round(time.monotonic() - t1, 1),
        "snapshots_per_s_incl_learning": round(predictions / max(1e-9, predict_s), 1),
        "learned": engine.model.learned,
        "final_threshold": engine.threshold.threshold,
        "rolling_auroc": round(engine.monitor.auroc(), 4),
        "rolling_log_loss": round(engine.monitor.log_loss(), 4),
        "drifts": engine.monitor.drifts,
    }
    return scores, costs


def predict_rate(series: list[PatientSeries], learner: str, n: int = 20000) -> float:
    """Bare ``predict_proba_one`` per second on one core, on a model that learned 20k rows."""
    engine = RiskEngine(EngineConfig(learner=learner))
    xs = []
    for s in series[:2000]:
        for at, f, y in zip(s.times, s.features, s.labels, strict=True):
            x = engine._patient(s.patient_id).features.update(at, f)
            xs.append((x, y))
    for x, y in xs[:n]:
        engine.model.learn_one(x, y)
    t0 = time.perf_counter()
    for x, _y in xs[:n]:
        engine.model.predict_proba_one(x)
    return n / (time.perf_counter() - t0)


def compare(learners: list[str], protocol: str, limit: int | None, tag: str = "") -> None:
    series = load_cache()
    if limit:
        series = series[:limit]
    results: dict[str, Any] = {"protocol": protocol, "patients": len(series), "learners": {}}
    test = [s for s in series if not (protocol == "b" and s.patient_id <= PRETRAIN_LAST)]
    for name, scores in baseline_scores(test).items():
        results.setdefault("baselines", {})[name] = scores.summary()
        print(name, scores.summary(), flush=True)
    for learner in learners:
        scores, costs = run_protocol(series, EngineConfig(learner=learner), protocol)
        summary = scores.summary() | costs | {"predict_per_s": round(predict_rate(series, learner))}
        results["learners"][learner] = summary
        print(learner, summary, flush=True)
        out = ROOT / "test-artifacts" / f"risk_compare_{protocol}{tag}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache")
    c.add_argument("source")
    c.add_argument("--parts", type=int, default=2)
    m = sub.add_parser("compare")
    m.add_argument("--learners", default="gbdt")
    m.add_argument("--protocol", choices=("a", "b"), default="a")
    m.add_argument("--limit", type=int, default=None)
    m.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args()
    if args.cmd == "cache":
        cache(args.source, args.parts)
    else:
        compare(args.learners.split(","), args.protocol, args.limit, args.tag)


if __name__ == "__main__":
    main()
