"""Writes ``dashboards/vigil.json`` (the provisioned "Vigil overview" dashboard).

Run ``.venv/bin/python deploy/grafana/build_dashboard.py`` after changing a panel;
``tests/unit/test_deploy_assets.py`` checks the JSON against the metrics in the code.
Aggregate series only: no label names a patient or a bed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "vigil.json"
DS = {"type": "prometheus", "uid": "vigil-prometheus"}
W = 'job="vigil-worker", instance=~"$instance"'  # the worker panels' selector
RATE = "[$__rate_interval]"

_ids = iter(range(1, 1000))
_y = 0


def _target(expr: str, legend: str, ref: str, instant: bool) -> dict[str, Any]:
    return {
        "datasource": DS,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "editorMode": "code",
    }


def row(title: str) -> dict[str, Any]:
    global _y
    panel = {
        "id": next(_ids),
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": _y},
        "panels": [],
    }
    _y += 1
    return panel


def stat(
    title: str,
    description: str,
    expr: str,
    *,
    x: int,
    w: int = 3,
    unit: str = "none",
    steps: Sequence[tuple[str, float | None]] | None = None,
    decimals: int | None = 0,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": c, "value": v} for c, v in (steps or [("green", None)])],
        },
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "id": next(_ids),
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": 4, "w": w, "x": x, "y": _y},
        "targets": [_target(expr, "", "A", True)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value",
            "justifyMode": "center",
            "orientation": "auto",
        },
    }


def series(
    title: str,
    description: str,
    queries: list[tuple[str, str]],
    *,
    x: int,
    w: int = 12,
    h: int = 8,
    unit: str = "none",
    stacked: bool = False,
    minimum: float | None = 0,
    maximum: float | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 30 if stacked else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
    }
    if minimum is not None:
        custom["axisSoftMin"] = minimum
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": custom,
        "color": {"mode": "palette-classic"},
    }
    if maximum is not None:
        defaults["max"] = maximum
    return {
        "id": next(_ids),
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": _y},
        "targets": [
            _target(expr, legend, chr(ord("A") + i), False)
            for i, (expr, legend) in enumerate(queries)
        ],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def advance(h: int) -> None:
    global _y
    _y += h


def quantiles(metric: str, selector: str, by: str = "") -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({metric}_bucket{{{selector}}}{RATE})))",
            f"{prefix}p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def panels() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    red_green = [("red", None), ("green", 1)]
    out.append(row("Overview"))
    out += [
        stat(
            "Workers up",
            "Vigil workers Prometheus can scrape (job vigil-worker).",
            f"sum(up{{{W}}})",
            x=0,
            steps=red_green,
        ),
        stat(
            "Workers ready",
            "Workers whose /readyz holds: partitions assigned, tables recovered, fetching.",
            f"sum(vigil_worker_ready{{{W}}})",
            x=3,
            steps=red_green,
        ),
        stat(
            "Samples in /s",
            "rate(vigil_samples_in_total), every raw topic.",
            f"sum(rate(vigil_samples_in_total{{{W}}}{RATE}))",
            x=6,
            unit="cps",
            decimals=1,
        ),
        stat(
            "Consumer lag",
            "Records not yet read, summed over the workers' input partitions.",
            f"sum(vigil_consumer_lag_records{{{W}}})",
            x=9,
            steps=[("green", None), ("orange", 1000), ("red", 10000)],
        ),
        stat(
            "High-priority alarms",
            "Alarms shown now at high priority (physiological and technical).",
            f'sum(vigil_active_alarms{{{W}, priority="high"}})',
            x=12,
            steps=[("green", None), ("red", 1)],
        ),
        stat(
            "Dead letters (1 h)",
            "Records refused to the dead-letter topic by the worker and the listeners.",
            'sum(increase(vigil_dead_letters_total{job=~"vigil-worker|vigil-listeners"}[1h]))'
            " or vector(0)",
            x=15,
            steps=[("green", None), ("orange", 1)],
        ),
        stat(
            "Alert starts (1 h)",
            "Alert events of phase start published.",
            f'sum(increase(vigil_alert_events_total{{{W}, phase="start"}}[1h])) or vector(0)',
            x=18,
        ),
        stat(
            "Event-to-alert p95",
            "From the triggering sample's received_at to Kafka acknowledging its alert.",
            "histogram_quantile(0.95, sum by (le) "
            f"(rate(vigil_event_to_alert_latency_seconds_bucket{{{W}}}[15m])))",
            x=21,
            unit="s",
            steps=[("green", None), ("orange", 1), ("red", 5)],
            decimals=2,
        ),
    ]
    advance(4)

    out.append(row("Input"))
    out += [
        series(
            "Samples in per second by source",
            "rate(vigil_samples_in_total): messages consumed from each raw topic. Feature "
            "snapshots published (rate-limited per patient) beside them.",
            [
                (f"sum by (source) (rate(vigil_samples_in_total{{{W}}}{RATE}))", "{{source}}"),
                (
                    f"sum(rate(vigil_feature_snapshots_total{{{W}}}{RATE}))",
                    "feature snapshots out",
                ),
            ],
            x=0,
            unit="cps",
        ),
        series(
            "Late samples per second by source",
            "Frequent-source values not after the patient's last one: counted and dropped.",
            [
                (f"sum by (source) (rate(vigil_samples_late_total{{{W}}}{RATE}))", "{{source}}"),
                (
                    f"sum(rate(vigil_records_deferred_total{{{W}}}{RATE}))",
                    "deferred across a rebalance (read again)",
                ),
                (
                    f"sum(rate(vigil_records_reread_total{{{W}}}{RATE}))",
                    "read again after recovery, already applied (skipped)",
                ),
            ],
            x=12,
            unit="cps",
        ),
    ]
    advance(8)
    out.append(
        series(
            "Dead letters by process, source and reason (per 5 min)",
            "vigil_dead_letters_total of the worker (decode, key, processing errors) and the "
            "listeners (unparseable or invalid input); never dropped, see the deadletter topic.",
            [
                (
                    "sum by (job, source, reason) (increase(vigil_dead_letters_total"
                    '{job=~"vigil-worker|vigil-listeners"}[5m]))',
                    "{{job}} {{source}} {{reason}}",
                )
            ],
            x=0,
            w=24,
        )
    )
    advance(8)

    out.append(row("Worker: consumer"))
    out += [
        series(
            "Consumer lag by topic and partition",
            "Records in each input partition after the last one read (highwater - next "
            "offset), refreshed every 2 s by each worker.",
            [
                (
                    f"max by (topic, partition) (vigil_consumer_lag_records{{{W}}})",
                    "{{topic}}[{{partition}}]",
                )
            ],
            x=0,
            w=16,
        ),
        series(
            "Assigned partitions and readiness by worker",
            "Input partitions each worker owns, and its /readyz verdict (1 = ready).",
            [
                (
                    f"sum by (instance) (vigil_assigned_partitions{{{W}}})",
                    "{{instance}} partitions",
                ),
                (f"sum by (instance) (vigil_worker_ready{{{W}}})", "{{instance}} ready"),
            ],
            x=16,
            w=8,
        ),
    ]
    advance(8)

    out.append(row("Alerts"))
    out += [
        series(
            "Active alarms by priority and kind",
            "Alarms shown now (active, escalated, latched) for the patients the workers hold; "
            "refreshed every 2 s.",
            [
                (
                    f"sum by (priority, kind) (vigil_active_alarms{{{W}}})",
                    "{{priority}} {{kind}}",
                )
            ],
            x=0,
            w=8,
            stacked=True,
        ),
        series(
            "Alert events by rule, phase and priority (per 5 min)",
            "vigil_alert_events_total.",
            [
                (
                    "sum by (rule_id, phase, priority) "
                    f"(increase(vigil_alert_events_total{{{W}}}[5m]))",
                    "{{rule_id}} {{phase}} {{priority}}",
                )
            ],
            x=8,
            w=8,
        ),
        series(
            "Event-to-alert latency p50 / p95 / p99",
            "vigil_event_to_alert_latency_seconds: received_at of the triggering sample to "
            "Kafka's ack of the alert event.",
            quantiles("vigil_event_to_alert_latency_seconds", W),
            x=16,
            w=8,
            unit="s",
        ),
    ]
    advance(8)
    out += [
        series(
            "Where the latency goes: worker stages p50 / p95 / p99",
            "vigil_worker_stage_seconds: to_worker (a vital sign's received_at to its batch"
            " taken: fetch and queueing), merge_wait (held by the event-time merge),"
            " batch_to_ack (batch taken to Kafka's ack of an alert it raised).",
            quantiles("vigil_worker_stage_seconds", W, by="stage"),
            x=0,
            w=24,
            unit="s",
        ),
    ]
    advance(8)

    listeners = 'job="vigil-listeners"'
    out.append(row("Ingest listeners"))
    out += [
        series(
            "Messages per second by adapter and outcome",
            "vigil_ingest_messages_total: accepted, duplicate, refused (dead letter), "
            "unavailable (Kafka did not acknowledge: negative ack). Records published beside.",
            [
                (
                    "sum by (adapter, outcome) "
                    f"(rate(vigil_ingest_messages_total{{{listeners}}}{RATE}))",
                    "{{adapter}} {{outcome}}",
                ),
                (
                    f"sum by (topic) (rate(vigil_ingest_records_total{{{listeners}}}{RATE}))",
                    "records to {{topic}}",
                ),
            ],
            x=0,
            w=8,
            unit="cps",
        ),
        series(
            "Ack latency p50 / p95 / p99 by adapter",
            "vigil_ingest_ack_latency_seconds: frames received to replies written, Kafka's "
            "acknowledgement included.",
            quantiles("vigil_ingest_ack_latency_seconds", listeners, by="adapter"),
            x=8,
            w=8,
            unit="s",
        ),
        series(
            "Connections",
            "Open sender connections by adapter; refused (too many) and de-duplication ids "
            "reused with other content, per 5 min.",
            [
                (f"sum by (adapter) (vigil_ingest_connections{{{listeners}}})", "{{adapter}} open"),
                (
                    "sum by (adapter) "
                    f"(increase(vigil_ingest_connections_refused_total{{{listeners}}}[5m]))",
                    "{{adapter}} refused",
                ),
                (
                    "sum by (adapter) "
                    f"(increase(vigil_ingest_reused_ids_total{{{listeners}}}[5m]))",
                    "{{adapter}} reused ids",
                ),
            ],
            x=16,
            w=8,
        ),
    ]
    advance(8)

    acm = 'job="vigil-acm"'
    out.append(row("Remote alarm delivery (IHE PCD-04)"))
    out += [
        series(
            "Pending messages and delivery alarm",
            "vigil_acm_pending_messages (sent, no ACK yet) and vigil_acm_delivery_alarm_active "
            "(1 while the technical alert acm.delivery_failed is active), by destination.",
            [
                (
                    f"max by (destination) (vigil_acm_pending_messages{{{acm}}})",
                    "{{destination}} pending",
                ),
                (
                    f"max by (destination) (vigil_acm_delivery_alarm_active{{{acm}}})",
                    "{{destination}} alarm",
                ),
            ],
            x=0,
            w=8,
        ),
        series(
            "Seconds since last ACK",
            "vigil_acm_seconds_since_last_ack by destination (keep-alives are acknowledged "
            "too, so it stays low while the receiver is up).",
            [
                (
                    f"max by (destination) (vigil_acm_seconds_since_last_ack{{{acm}}})",
                    "{{destination}}",
                )
            ],
            x=8,
            w=8,
            unit="s",
        ),
        series(
            "Transmissions per 5 min",
            "Sent (resends too), acknowledged, retries, negative ACKs, keep-alives, alerts "
            "filtered out and records dead-lettered.",
            [
                (f"sum(increase({name}{{{acm}}}[5m]))", label)
                for name, label in (
                    ("vigil_acm_messages_sent_total", "sent"),
                    ("vigil_acm_messages_acked_total", "acked"),
                    ("vigil_acm_retries_total", "retries"),
                    ("vigil_acm_negative_acks_total", "negative acks"),
                    ("vigil_acm_keepalives_sent_total", "keep-alives"),
                    ("vigil_acm_filtered_total", "filtered"),
                    ("vigil_acm_dead_letters_total", "dead letters"),
                )
            ],
            x=16,
            w=8,
        ),
    ]
    advance(8)

    display = 'job="vigil-display"'
    out.append(row("Central-station display"))
    out += [
        series(
            "Open pages",
            "vigil_display_pages: central-station pages holding a live event stream.",
            [(f"sum by (instance) (vigil_display_pages{{{display}}})", "{{instance}}")],
            x=0,
            w=8,
        ),
        series(
            "Feed records per second",
            "Records the display read from Kafka, and those it skipped as unreadable.",
            [
                (f"sum(rate(vigil_display_feed_records_total{{{display}}}{RATE}))", "read"),
                (f"sum(rate(vigil_display_invalid_records_total{{{display}}}{RATE}))", "invalid"),
            ],
            x=8,
            w=8,
            unit="cps",
        ),
        series(
            "Feed caught up",
            "1 when the display's feed has read up to the end of its topics (/readyz).",
            [(f"min by (instance) (vigil_display_kafka_caught_up{{{display}}})", "{{instance}}")],
            x=16,
            w=8,
            maximum=1,
        ),
    ]
    advance(8)

    risk = 'job="vigil-risk"'
    out.append(row("Risk model quality (prequential)"))
    out += [
        series(
            "AUROC and calibration error by model",
            "vigil_risk_rolling_auroc (each prediction scored before its label is learned) "
            "and vigil_risk_calibration_error (expected calibration error, 10 bins).",
            [
                (f"max by (model) (vigil_risk_rolling_auroc{{{risk}}})", "{{model}} AUROC"),
                (f"max by (model) (vigil_risk_calibration_error{{{risk}}})", "{{model}} ECE"),
            ],
            x=0,
            w=8,
            maximum=1,
        ),
        series(
            "Log loss by model",
            "vigil_risk_rolling_log_loss (prequential).",
            [(f"max by (model) (vigil_risk_rolling_log_loss{{{risk}}})", "{{model}}")],
            x=8,
            w=8,
        ),
        series(
            "Drift, learning and cold start",
            "Drift events per hour (ADWIN on the loss), labels learned, 1 while the "
            "rule-based fallback is published; predictions and checkpoints per 5 min.",
            [
                (
                    f"sum by (model) (increase(vigil_risk_drift_events_total{{{risk}}}[1h]))",
                    "{{model}} drift /h",
                ),
                (f"max by (model) (vigil_risk_labels_learned{{{risk}}})", "{{model}} learned"),
                (f"max by (model) (vigil_risk_cold_start{{{risk}}})", "{{model}} cold start"),
                (
                    f"sum by (model) (increase(vigil_risk_predictions_total{{{risk}}}[5m]))",
                    "{{model}} predictions",
                ),
                (
                    f"sum by (model) (increase(vigil_risk_checkpoints_total{{{risk}}}[5m]))",
                    "{{model}} checkpoints",
                ),
            ],
            x=16,
            w=8,
        ),
    ]
    advance(8)

    every = 'job=~"vigil-.*"'
    out.append(row("Processes"))
    out += [
        series(
            "Resident memory",
            "process_resident_memory_bytes of every Vigil process.",
            [(f"process_resident_memory_bytes{{{every}}}", "{{job}} {{instance}}")],
            x=0,
            w=8,
            unit="bytes",
        ),
        series(
            "CPU (cores)",
            "rate(process_cpu_seconds_total) of every Vigil process.",
            [(f"rate(process_cpu_seconds_total{{{every}}}{RATE})", "{{job}} {{instance}}")],
            x=8,
            w=8,
        ),
        series(
            "Patients in memory, states retired, by worker",
            "Patients whose state a worker holds in memory; a discharged patient's leaves "
            "once written, so this follows the occupied beds. Retired: discharged patients' "
            "states reduced to a stub in the table 30 days (event time) after discharge, "
            "per day. Input pauses: a topic-partition read far ahead of the others is "
            "paused so that the event-time merge stays bounded (while a backlog is read).",
            [
                (
                    f"sum by (instance) (vigil_worker_patients_in_memory{{{W}}})",
                    "{{instance}} in memory",
                ),
                (
                    f"sum by (instance) (increase(vigil_patient_states_retired_total{{{W}}}[1d]))",
                    "{{instance}} retired /day",
                ),
                (
                    f"sum by (instance) (increase(vigil_worker_merge_pauses_total{{{W}}}[1h]))",
                    "{{instance}} input pauses /h (merge ahead)",
                ),
            ],
            x=16,
            w=8,
        ),
    ]
    advance(8)
    return out


def dashboard() -> dict[str, Any]:
    return {
        "uid": "vigil-overview",
        "title": "Vigil overview",
        "description": (
            "Vigil: worker (input, lag, alarms, latency), ingest listeners, remote alarm "
            "delivery, display, risk model quality, process resources. Aggregate series "
            "only: no per-patient or per-bed series."
        ),
        "tags": ["vigil", "icu"],
        "schemaVersion": 39,
        "version": 2,
        "editable": False,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "instance",
                    "label": "Worker",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": 'label_values(up{job="vigil-worker"}, instance)',
                        "refId": "instance",
                    },
                    "definition": 'label_values(up{job="vigil-worker"}, instance)',
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "sort": 1,
                    "hide": 0,
                    "options": [],
                    "regex": "",
                    "skipUrlSync": False,
                }
            ]
        },
        "panels": panels(),
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT}")
