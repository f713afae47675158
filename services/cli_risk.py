"""``vigil risk`` (the agent), ``vigil model export|import`` and ``vigil evaluate physionet``.

Also runnable on its own: ``python -m services.cli_risk risk ...``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from services.cli_common import load_settings

log = logging.getLogger(__name__)

_OUTCOME = click.option(
    "--outcome",
    type=click.Choice(["sepsis", "mods_progression_6h"]),
    default="sepsis",
    show_default=True,
    help="What the model predicts",
)
_CHECKPOINT = click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint file (default: $VIGIL_DATA_DIR/risk/<prefix><outcome>.ckpt)",
)


@click.command("risk")
@_OUTCOME
@click.option("--learner", default="gbdt", show_default=True, help="Learner of a new model")
@_CHECKPOINT
@click.option("--checkpoint-every", type=float, default=30.0, show_default=True, help="Seconds")
@click.option("--metrics-port", type=int, default=9111, show_default=True, help="0 disables")
@click.option("--min-learned", type=int, default=2000, show_default=True, help="Cold start until")
@click.option("--min-positives", type=int, default=50, show_default=True, help="... and these")
def risk(
    outcome: str,
    learner: str,
    checkpoint: Path | None,
    checkpoint_every: float,
    metrics_port: int,
    min_learned: int,
    min_positives: int,
) -> None:
    """The online risk agent: features + context in, RiskScores on the risk topic."""
    from services.risk_agent import run_agent
    from streams.risk.engine import EngineConfig

    settings = load_settings()
    config = EngineConfig(
        outcome=outcome, learner=learner, min_learned=min_learned, min_positives=min_positives
    )
    run_agent(
        settings,
        config,
        checkpoint=checkpoint,
        checkpoint_every_s=checkpoint_every,
        metrics_port=metrics_port,
    )


@click.group("model")
def model_group() -> None:
    """Export or import a risk model (warm-start a site from another's)."""


@model_group.command("export")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@_OUTCOME
@_CHECKPOINT
def model_export(out: Path, outcome: str, checkpoint: Path | None) -> None:
    """Write the agent's learned model (no patient state, no offsets) to OUT."""
    from services.risk_agent import checkpoint_path, write_atomic
    from streams.risk.engine import dumps, loads

    path = checkpoint or checkpoint_path(load_settings(), outcome)
    if not path.exists():
        raise click.ClickException(f"no checkpoint at {path}")
    engine = loads(path.read_bytes()).for_export()
    write_atomic(out, dumps(engine))
    click.echo(f"exported {engine.model_id} {engine.model_version} to {out}")


@model_group.command("import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_OUTCOME
@_CHECKPOINT
def model_import(source: Path, outcome: str, checkpoint: Path | None) -> None:
    """Make SOURCE (from ``vigil model export``) the agent's model; stop the agent first.

    The agent's read positions are kept; its patients' buffers start empty.
    """
    from services.risk_agent import checkpoint_path, write_atomic
    from streams.risk.engine import dumps, load_checkpoint, loads

    try:
        engine = loads(source.read_bytes())
    except Exception as exc:
        raise click.ClickException(f"{source} is not a risk model export: {exc}") from exc
    if engine.config.outcome != outcome:
        raise click.ClickException(f"{source} predicts {engine.config.outcome!r}, not {outcome!r}")
    path = checkpoint or checkpoint_path(load_settings(), outcome)
    held = None
    if path.exists():  # the read positions and the context held before them stay
        current, held = load_checkpoint(path.read_bytes())
        engine.positions = dict(current.positions)
    write_atomic(path, dumps(engine, held))
    click.echo(f"imported {engine.model_id} {engine.model_version} into {path}")


@click.command("physionet")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--pretrain", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="Fixed alarm cut")
@click.option("--ids", default=None, help="Evaluated patients, e.g. p010001- (default all)")
@click.option("--pretrain-ids", default=None, help="Pretraining patients, e.g. -p010000")
@click.option("--patients", type=click.IntRange(1), default=None, help="First N evaluated")
@click.option("--learner", default="gbdt", show_default=True)
@click.option("--stagger-h", type=float, default=1.0, show_default=True, help="Admissions apart")
@click.option(
    "--results",
    type=click.Path(path_type=Path),
    default=Path("test-artifacts/physionet_results.json"),
    show_default=True,
)
@click.option("--timeout", type=float, default=6 * 3600.0, show_default=True, help="Seconds")
@click.option(
    "--keep-topics",
    is_flag=True,
    help="Keep the run's topics on the broker (default: deleted once scored; a full set A"
    " run leaves gigabytes)",
)
def evaluate_physionet(
    data: Path,
    pretrain: Path | None,
    threshold: float | None,
    ids: str | None,
    pretrain_ids: str | None,
    patients: int | None,
    learner: str,
    stagger_h: float,
    results: Path,
    timeout: float,
    keep_topics: bool,
) -> None:
    """Replay PhysioNet 2019 DATA through the broker, worker and risk agent; print the
    normalised utility, AUROC, AUPRC, alerts per patient-day, and the baselines."""
    from kafka.errors import KafkaError

    from services import procs
    from services.kafka_io import create_topics, delete_topics, reliable_producer
    from services.kafka_local import free_port, wait_for_broker
    from services.physionet_eval import (
        BrokerRun,
        plots,
        read_topic,
        score_broker_output,
        select_files,
        staggered_anchors,
        wait_for_pipeline,
        write_results,
    )
    from services.physionet_eval import (
        pretrain as pretrain_engine,
    )
    from services.replay.common import DEFAULT_START, merge_patients
    from services.replay.physionet2019 import read_patient
    from services.replay.publish import publish_records
    from services.risk_agent import write_atomic
    from streams.risk.engine import EngineConfig, RiskEngine, dumps, loads

    settings = load_settings()
    started = time.monotonic()
    figures: dict[str, object] = {
        "data": str(data),
        "pretrain": str(pretrain) if pretrain else None,
        "ids": ids,
        "pretrain_ids": pretrain_ids,
        "learner": learner,
        "threshold": threshold if threshold is not None else "learned (utility on discharged)",
        "stagger_h": stagger_h,
        "path": "replay -> broker -> vigil worker -> features -> vigil risk -> risk topic",
    }
    stamp = f"{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:4]}"  # unique per run
    run = BrokerRun(
        bootstrap=settings.bootstrap_servers,
        workdir=(settings.data_dir / "eval" / stamp).resolve(),
        prefix=f"eval-{stamp}.",
        app_id=f"vigil-eval-{stamp}",
        partitions=settings.partitions,
    )
    figures["topic_prefix"] = run.prefix
    try:  # the data first: a wrong path or range fails before anything starts
        files = select_files(data, ids, patients)
        pretrain_files = select_files(pretrain, pretrain_ids) if pretrain is not None else []
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    overlap = {f.patient_id for f in pretrain_files} & {f.patient_id for f in files}
    if overlap:  # scored on patients it learned from: the figures would mean nothing
        raise click.ClickException(
            f"{len(overlap)} patients (e.g. {min(overlap)}) are both pretrained on and"
            " evaluated: give disjoint --pretrain-ids and --ids"
        )
    try:
        wait_for_broker(run.bootstrap, timeout_s=30)
    except Exception as exc:
        raise click.ClickException(
            f"no broker at {run.bootstrap} ({exc}); start one with `vigil kafka start`"
        ) from exc
    config = EngineConfig(outcome="sepsis", learner=learner)
    engine = RiskEngine(config)
    pretrained_rows = 0
    if pretrain is not None:
        t0 = time.monotonic()
        click.echo(
            f"pretraining {learner} on {len(pretrain_files)} patients of {pretrain} ...", err=True
        )
        pretrained_rows = pretrain_engine(engine, pretrain_files)
        engine = loads(dumps(engine.without_patients()))
        figures["pretrain_rows"] = pretrained_rows
        figures["pretrain_s"] = round(time.monotonic() - t0, 1)
    checkpoint = run.workdir / "risk.ckpt"
    write_atomic(checkpoint, dumps(engine))

    anchors = staggered_anchors(
        [f.patient_id for f in files], DEFAULT_START, timedelta(hours=stagger_h)
    )
    from schemas.topics import TopicRegistry

    registry = TopicRegistry(prefix=run.prefix, partitions=run.partitions)
    create_topics(run.bootstrap, registry)
    env = run.env()
    vigil = [sys.executable, "-m", "services.cli"]
    worker = procs.spawn([*vigil, "worker"], env=env, log_path=run.workdir / "worker.log")
    agent = procs.spawn(
        [
            sys.executable,
            "-m",
            "services.cli_risk",
            "risk",
            "--learner",
            learner,
            "--checkpoint",
            str(checkpoint),
            "--checkpoint-every",
            "5",
            "--metrics-port",
            str(free_port()),
        ],
        env=env,
        log_path=run.workdir / "risk.log",
    )
    run.processes += [worker, agent]
    try:
        click.echo(
            f"replaying {len(files)} patients into {run.prefix}* (logs in {run.workdir})", err=True
        )
        producer = reliable_producer(run.bootstrap, client_id="vigil-eval")
        t_replay = time.monotonic()
        try:
            stats = publish_records(
                merge_patients(read_patient(f, anchors[f.patient_id]) for f in files),
                producer,
                registry,
                speed=None,
            )
        finally:
            producer.close()
        figures["replay_records"] = stats.records
        figures["replay_publish_s"] = round(time.monotonic() - t_replay, 1)
        try:
            wait_for_pipeline(
                run, registry, checkpoint, timeout, {"worker": worker, "risk agent": agent}
            )
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from exc
        figures["pipeline_s"] = round(time.monotonic() - t_replay, 1)
        figures["rows_per_s_through_pipeline"] = round(
            sum(1 for f in files for _ in f.text.splitlines()[1:])
            / max(1e-9, time.monotonic() - t_replay),
            1,
        )
    finally:
        for proc in reversed(run.processes):
            procs.stop(proc, timeout_s=30)
    final = loads(checkpoint.read_bytes())  # what the agent learned online, and who not
    figures["rows_learned_online"] = final.model.learned - pretrained_rows
    figures["patients_never_learned"] = len(final.patients)
    risk_values = [v for _k, v in read_topic(run.bootstrap, registry.name("risk"))]
    feature_values = [v for _k, v in read_topic(run.bootstrap, registry.name("features"))]
    scored, model_rows = score_broker_output(files, anchors, risk_values, feature_values, threshold)
    figures |= scored
    figures |= plots(model_rows, results.with_suffix(""), f"Vigil risk ({learner})")
    figures["risk_messages"] = len(risk_values)
    figures["feature_snapshots"] = len(feature_values)
    figures["total_s"] = round(time.monotonic() - started, 1)
    write_results(results, figures)
    if not keep_topics:  # the run's own topics and the worker's internal ones (changelog)
        try:
            figures["topics_deleted"] = len(
                delete_topics(run.bootstrap, (run.prefix, f"{run.app_id}-"))
            )
        except KafkaError as exc:  # the figures are written: say so, keep them
            click.echo(f"the run's topics ({run.prefix}*) were not deleted: {exc}", err=True)
        write_results(results, figures)
    _print(figures)
    click.echo(f"results in {results}", err=True)


def _print(figures: dict[str, object]) -> None:
    click.echo(
        f"{'':16} {'utility':>8} {'AUROC':>7} {'AUPRC':>7} {'alerts/pt-day':>14} "
        f"{'alarm h/pt-day':>15}"
    )
    for name in ("model", "qsofa_ge_2", "news2_ge_5", "news2_known_ge_5", "sofa_rise_ge_2"):
        row = figures.get(name)
        if isinstance(row, dict):
            click.echo(
                f"{name:16} {row['utility']:>8} {row['auroc']:>7} {row['auprc']:>7} "
                f"{row['alerts_per_patient_day']:>14} {row['alarm_hours_per_patient_day']:>15}"
            )
    click.echo(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}))


@click.group()
def _standalone() -> None:
    logging.basicConfig(
        level=load_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_standalone.add_command(risk)
_standalone.add_command(model_group)
_standalone.add_command(evaluate_physionet)

if __name__ == "__main__":
    _standalone()
