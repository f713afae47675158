"""Run the display: the Kafka feed thread plus uvicorn, until stopped.

``serve_display`` blocks; call it in a thread (``vigil run``) or as the main
program (``vigil display``). It binds its socket before serving, so ``port=0``
works and the printed URL is the real one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import uvicorn

from services.config import Settings
from services.display.app import create_app
from services.display.auth import DisplaySettings, resolve_access
from services.display.feed import KafkaFeed
from services.display.state import UnitState

log = logging.getLogger(__name__)


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

    app = create_app(
        state,
        lock,
        access,
        feed.publish_ack,
        tick_s=display.display_tick_s,
        secure_cookies=display.display_secure_cookies,
        session_hours=display.display_session_hours,
        status=status,
    )
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
                app.state.hub.close()
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
        try:
            asyncio.run(serve())
        finally:
            feed.stop()
            sock.close()
            echo("display stopped")

    return run
