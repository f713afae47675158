"""Running listeners in one process: topics checked, producer started, servers up, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.config import Settings
from services.ingest.gateway import KafkaGateway
from services.ingest.server import Codec, Listener, ListenerLimits
from services.kafka_io import check_topics
from services.observability import Heartbeat, Probes, ProbeServer, serve_probes

log = logging.getLogger(__name__)


class ProducerFailedError(RuntimeError):
    """The producer hit an unrecoverable error: senders get no ack until a restart."""


@dataclass(frozen=True)
class ListenerSpec:
    codec: Codec
    port: int  # 0 = any free port (printed when ready)
    topics: tuple[str, ...]  # base names it writes to (checked before accepting anything)


def limits_of(settings: Settings) -> ListenerLimits:
    return ListenerLimits(
        max_frame_bytes=settings.ingest_max_message_bytes,
        idle_timeout_s=settings.ingest_idle_timeout_s,
        max_connections=settings.ingest_max_connections,
    )


async def serve_listeners(
    settings: Settings,
    specs: Sequence[ListenerSpec],
    *,
    on_ready: Callable[[str, str, int], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM); ``on_ready(adapter, host, port)``.

    Refuses to start (raises ``TopicLayoutError``) unless every topic a listener writes
    exists as the registry says, so nothing is ever acknowledged into a missing topic.
    Raises :class:`ProducerFailedError` after a clean stop when the producer failed for
    good (fenced, out-of-order sequence, not authorised): a supervisor restarts it.
    """
    wanted = sorted({t for spec in specs for t in spec.topics} | {"deadletter"})
    await asyncio.to_thread(check_topics, settings.bootstrap_servers, settings.topics, wanted)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    gateway = KafkaGateway(
        settings.bootstrap_servers,
        settings.topics,
        client_id="vigil-ingest-" + "-".join(s.codec.adapter for s in specs),
        publish_timeout_s=settings.ingest_publish_timeout_s,
    )
    await gateway.start()
    servers: list[asyncio.Server] = []
    beat = Heartbeat()
    probes = Probes()
    probes.alive("event_loop", beat.live)
    probes.ready("kafka", gateway.connected)
    probes.ready("listening", lambda: len(servers) == len(specs))
    probe_server: ProbeServer | None = None
    if settings.ingest_metrics_port:
        try:
            probe_server = serve_probes(settings.metrics_host, settings.ingest_metrics_port, probes)
        except OSError as exc:  # e.g. a second listener process on one host
            log.warning("no /metrics on port %d: %s", settings.ingest_metrics_port, exc)
    listeners: list[Listener] = []
    try:
        for spec in specs:
            listener = Listener(spec.codec, gateway, limits_of(settings))
            listeners.append(listener)
            server = await listener.serve(settings.ingest_host, spec.port)
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
            on_ready(spec.codec.adapter, settings.ingest_host, port)
        while not stop.is_set() and gateway.fatal is None:
            beat.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        if gateway.fatal is not None:
            log.critical("Kafka producer failed for good (%s): stopping", gateway.fatal)
        log.info("stopping listeners")
    finally:
        for server in servers:
            server.close()  # no new connections
        await asyncio.gather(*(listener.shutdown() for listener in listeners))
        await gateway.stop()  # flushes writes still in flight
        if probe_server is not None:
            probe_server.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if gateway.fatal is not None:
        raise ProducerFailedError(
            f"the Kafka producer cannot recover ({gateway.fatal}); restart the listener"
        )
