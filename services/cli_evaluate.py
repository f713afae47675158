"""``vigil evaluate alerts``: an HTML report (PNG plots) of alert events against ground truth.

Registered by services/cli.py in the ``evaluate`` group as ``alerts``.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("alerts")
@click.option(
    "--truth",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Ground truth: GroundTruth JSON lines (`vigil simulate --truth`), OutcomeLabel JSON"
    " lines, or a PhysioNet 2019 dataset (.tar.gz or folder of .psv: its SepsisLabel)",
)
@click.option(
    "--alerts",
    "alerts_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Alert events, JSON lines (`vigil alerts tail --json --from-beginning`)",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for index.html, its PNGs and scores.json",
)
@click.option(
    "--risk",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Risk scores (RiskScore JSON lines, the risk topic): adds ROC and calibration",
)
@click.option(
    "--beds",
    type=click.IntRange(1),
    default=None,
    help="Beds in the run (default: patients in the inputs) for rates per bed-day",
)
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Length of the run (default: first to last event time in the inputs)",
)
@click.option(
    "--start",
    default=None,
    help="Dataset truth only: the anchor the dataset was replayed with (`vigil replay"
    " --start`); default the replay's default",
)
@click.option(
    "--patients",
    type=click.IntRange(1),
    default=None,
    help="Dataset truth only: its first N patients, as replayed with `vigil replay --patients`",
)
@click.option("--title", default="Vigil alert evaluation", show_default=True)
def evaluate_alerts(
    truth: Path,
    alerts_path: Path,
    out: Path,
    risk: Path | None,
    beds: int | None,
    hours: float | None,
    start: str | None,
    patients: int | None,
    title: str,
) -> None:
    """Score alert events against ground truth (sensitivity, time to alert, alarms per
    bed-day, PPV per rule) and write an HTML report with plots into OUT."""
    from services.cli_replay import parse_start
    from services.evaluation import EvaluationInputError, load_alerts, load_truth
    from services.report.alerts import load_risk, write_alert_report

    try:
        anchor = parse_start(start) if start is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--start") from exc
    try:
        annotations, kind = load_truth(truth, start=anchor, patients=patients)
        alerts = load_alerts(alerts_path)
        scores = load_risk(risk) if risk is not None else []
        page = write_alert_report(
            out,
            annotations,
            alerts,
            truth_kind=kind,
            risk=scores,
            beds=beds,
            hours=hours,
            title=title,
        )
    except (EvaluationInputError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{len(alerts)} alert events against {len(annotations)} annotations ({kind}):"
        f" report {page}",
        err=True,
    )
    click.echo(str(page))


if __name__ == "__main__":
    evaluate_alerts()
