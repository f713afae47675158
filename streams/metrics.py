"""Prometheus metrics of the stream worker (no patient identifiers in labels)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SAMPLES_IN = Counter("vigil_samples_in_total", "Messages consumed from raw topics", ["source"])
SAMPLES_LATE = Counter(
    "vigil_samples_late_total", "Messages not after the patient's last event time", ["source"]
)
DEAD_LETTERS = Counter(
    "vigil_dead_letters_total",
    "Records refused to the dead-letter topic, by input",
    ["source", "reason"],
)
ALERT_EVENTS = Counter(
    "vigil_alert_events_total", "Alert events published", ["rule_id", "phase", "priority"]
)
EVENT_TO_ALERT_LATENCY = Histogram(
    "vigil_event_to_alert_latency_seconds",
    "Wall time from the triggering sample's received_at to Kafka acknowledging its alert",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FEATURE_SNAPSHOTS = Counter("vigil_feature_snapshots_total", "Feature snapshots published")
