"""Run the display: the Kafka feed thread plus uvicorn, until stopped.

``serve_display`` blocks; call it in a thread (``vigil run``) or as the main
program (``vigil display``). It binds its socket before serving, so ``port=0``
works and the printed URL is the real one. Beside the app's ``/healthz`` it serves
``/readyz`` (the Kafka feed caught up, no Kafka error) and ``/metrics`` (the
``vigil_display_*`` figures of every display in the process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from services.config import Settings
from services.display.app import create_app
from services.display.auth import DisplaySettings, resolve_access
from services.display.feed import KafkaFeed
from services.display.state import UnitState
from services.observability import Probes, with_probes

log = logging.getLogger(__name__)


class _DisplayCollector:
    """``vigil_display_*`` summed over the displays serving in this process."""

    def __init__(self) -> None:
        self.sources: dict[int, Callable[[], dict[str, Any]]] = {}

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        return self._families({k: f() for k, f in list(self.sources.items())})

    @staticmethod
    def _families(stats: dict[int, dict[str, Any]]) -> Iterator[Metric]:
        figures = list(stats.values())
        yield GaugeMetricFamily(
            "vigil_display_pages",
            "Open central-station pages (live event streams)",
            value=sum(s["pages"] for s in figures),
        )
        yield CounterMetricFamily(
            "vigil_display_feed_records",
            "Records the display read from Kafka",
            value=sum(s["records"] for s in figures),
        )
        yield CounterMetricFamily(
            "vigil_display_invalid_records",
            "Records the display skipped as unreadable",
            value=sum(s["invalid_records"] for s in figures),
        )
        yield GaugeMetricFamily(
            "vigil_display_kafka_caught_up",
            "1 when every display's feed has read up to the end of its topics",
            value=1 if figures and all(s["kafka_caught_up"] for s in figures) else 0,
        )


DISPLAY_METRICS = _DisplayCollector()
REGISTRY.register(DISPLAY_METRICS)


def demo_display_settings() -> DisplaySettings:
    """Development mode unless VIGIL_ENV says otherwise (for ``vigil run``/``make run``)."""
    if "VIGIL_ENV" in os.environ:
        return DisplaySettings()
    return DisplaySettings(env="development")


def serve_display(
    settings: Settings,
    *,
    display: DisplaySettings | None = None,
    host: str | None = None,
    port: int | None = None,
    stop: threading.Event | None = None,
    echo: Callable[[str], None] = log.info,
) -> None:
    """Serve the central station until ``stop`` is set (or SIGINT/SIGTERM in the main thread).

    Raises :class:`services.display.auth.DisplayConfigError` (or ``UsersFileError``)
    before binding anything when the configuration is refused.
    """
    _prepare(settings, display, host, port, stop or threading.Event(), echo)()


def start_display_thread(
    settings: Settings,
    *,
    stop: threading.Event,
    display: DisplaySettings | None = None,
    host: str | None = None,
    port: int | None = None,
    echo: Callable[[str], None] = log.info,
) -> threading.Thread:
    """Check the configuration, bind, print the URL, then serve in a thread until ``stop``.

    Errors (refused configuration, port in use) are raised here, in the caller's
    thread; the returned thread ends when ``stop`` is set.
    """
    run = _prepare(settings, display, host, port, stop, echo)
    thread = threading.Thread(target=run, name="display", daemon=True)
    thread.start()
    return thread


def _prepare(
    settings: Settings,
    display: DisplaySettings | None,
    host: str | None,
    port: int | None,
    stop: threading.Event,
    echo: Callable[[str], None],
) -> Callable[[], None]:
    display = display or DisplaySettings()
    access = resolve_access(display)
    state, lock = UnitState(), threading.Lock()
    feed = KafkaFeed(
        settings.bootstrap_servers,
        settings.topics,
        state,
        lock,
        readback_hours=display.display_readback_hours,
    )

    def status() -> dict[str, Any]:
        return {
            "kafka_caught_up": feed.caught_up.is_set(),
            "records": feed.records,
            "invalid_records": feed.invalid,
            "kafka_error": feed.last_error,
        }

    inner = create_app(
        state,
        lock,
        access,
        feed.publish_ack,
        tick_s=display.display_tick_s,
        secure_cookies=display.display_secure_cookies,
        session_hours=display.display_session_hours,
        status=status,
    )
    probes = Probes()
    probes.ready("kafka_caught_up", feed.caught_up.is_set)
    probes.ready("kafka_reachable", lambda: feed.last_error is None)
    app = with_probes(inner, probes)

    def figures() -> dict[str, Any]:
        return {**status(), "pages": len(inner.state.hub.queues)}

    bind_host = host or display.display_host
    sock = socket.socket(socket.AF_INET6 if ":" in bind_host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind_host, display.display_port if port is None else port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
        ws="none",
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not task.done():
            if stop.is_set() or server.should_exit:
                inner.state.hub.close()
                server.should_exit = True
                break
            await asyncio.sleep(0.2)
        await task

    shown = "127.0.0.1" if bind_host in ("0.0.0.0", "::") else bind_host  # noqa: S104
    echo(f"display: http://{shown}:{bound}/")
    if access.development:
        echo("display: development mode (generated secret; guests may view, log in to act)")
        for name, password in access.demo_passwords.items():
            echo(f"display: demo user {name!r} password {password!r}")

    def run() -> None:
        feed.start()
        DISPLAY_METRICS.sources[id(feed)] = figures
        try:
            asyncio.run(serve())
        finally:
            DISPLAY_METRICS.sources.pop(id(feed), None)
            feed.stop()
            sock.close()
            echo("display stopped")

    return run
