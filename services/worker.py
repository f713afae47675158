"""Shell of ``vigil worker``: settings -> faust app -> running worker with /metrics."""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import start_http_server

from services.config import Settings
from services.kafka_io import check_topics
from streams.app import WorkerConfig, create_app
from streams.rules import load_rules

log = logging.getLogger(__name__)


def worker_config(settings: Settings, rules_path: Path | None = None) -> WorkerConfig:
    """Validate the rules and gather what the faust app needs."""
    return WorkerConfig(
        app_id=settings.app_id,
        bootstrap_servers=settings.bootstrap_servers,
        store=settings.store,
        datadir=settings.data_dir / "worker" / settings.app_id,
        topics=settings.topics,
        rules=load_rules(rules_path),
    )


def run_worker(settings: Settings, rules_path: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT. Rules and topics are checked before anything starts."""
    from faust import Worker

    config = worker_config(settings, rules_path)
    check_topics(settings.bootstrap_servers, settings.topics, ["vitals", "alerts", "deadletter"])
    config.datadir.mkdir(parents=True, exist_ok=True)
    app = create_app(config)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    log.info(
        "worker %s: %d rules, topics %s*, store %s",
        config.app_id,
        len(config.rules.rule),
        settings.topic_prefix,
        settings.store,
    )
    Worker(app, loglevel=settings.log_level.lower(), quiet=True).execute_from_commandline()
