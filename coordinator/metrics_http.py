"""Telemetry into the run directory and a Prometheus endpoint: one MQTT listener.

:class:`TelemetryRecorder` subscribes to every agent's telemetry and every job's retained
status, stores telemetry with :class:`~coordinator.telemetry_store.TelemetryStore` and
feeds :class:`~coordinator.telemetry_store.MetricsRegistry`; :func:`serve_metrics`
exposes that registry over HTTP (``prometheus_client``'s server, a daemon thread), for
Prometheus to scrape and ``deploy/grafana/fedbus.json`` to plot. A message that does not
parse, or whose agent is not the one its topic names, is dropped with a log line.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from coordinator.telemetry_store import MetricsRegistry, TelemetryStore
from fedbus.protocol import bus
from fedbus.protocol.errors import FedbusProtocolError
from fedbus.protocol.messages import JobStatus, Telemetry, decode_json
from fedbus.protocol.topics import TopicKind, Topics

log = logging.getLogger(__name__)

T = TypeVar("T")


def serve_metrics(metrics: MetricsRegistry, port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serve ``/metrics`` on ``host:port`` (0: a free port, see ``server.server_port``)."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server


class TelemetryRecorder:
    def __init__(
        self, broker: bus.BrokerSettings, runs_dir: Path, metrics: MetricsRegistry | None = None
    ) -> None:
        self.broker = broker
        self.topics = Topics(broker.prefix)
        self.store = TelemetryStore(runs_dir / "telemetry")
        self.metrics = metrics or MetricsRegistry()
        self.subscribed = asyncio.Event()  # set while subscribed
        self.dropped = 0

    async def run(self) -> None:
        try:
            await bus.run_with_reconnect(self._session, "telemetry recorder", self.subscribed.clear)
        finally:
            self.store.close()

    async def _session(self) -> None:
        client = bus.make_client(self.broker, f"telemetry-{uuid.uuid4().hex[:8]}", persistent=False)
        async with client:
            await client.subscribe(self.topics.all_agent_telemetry(), qos=0)
            await client.subscribe(self.topics.all_job_status(), qos=1)
            self.subscribed.set()
            try:
                async for message in bus.messages(client):
                    payload = message.payload
                    if isinstance(payload, bytes | bytearray):
                        self.handle(str(message.topic), payload)
            finally:
                self.subscribed.clear()

    def handle(self, topic: str, payload: bytes | bytearray) -> None:
        """Store and count one message; a bad one is dropped, never raised."""
        try:
            parsed = self.topics.parse(topic)
            if parsed.kind is TopicKind.AGENT_TELEMETRY:
                telemetry = decode_json(Telemetry, payload)
                if telemetry.agent != parsed.agent:
                    raise FedbusProtocolError(
                        f"telemetry of {telemetry.agent!r} on {parsed.agent!r}'s topic"
                    )
                self.store.append(telemetry)
                self.metrics.observe_telemetry(telemetry)
            elif parsed.kind is TopicKind.JOB_STATUS and payload:
                self.metrics.observe_job(decode_json(JobStatus, payload))
        except (FedbusProtocolError, OSError) as exc:
            self.dropped += 1
            log.warning("telemetry recorder: dropped message on %s: %s", topic, exc)


async def with_telemetry(
    main: Awaitable[T],
    broker: bus.BrokerSettings,
    runs_dir: Path,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    attach: Callable[[Callable[[str, bytes | bytearray], None]], None] | None = None,
) -> T:
    """Await ``main`` (a coordinator's serve) while recording telemetry beside it.

    ``attach`` hands the recorder's message handler to the coordinator, whose own
    connection then carries telemetry: on the secure listener the broker makes the
    username the client id, so a second connection of the coordinator's user would take
    the first one over, and each would keep dropping the other. Without it the recorder
    has a connection of its own (a separate user, or the anonymous test listener).
    """
    recorder = TelemetryRecorder(broker, runs_dir)
    server = (
        serve_metrics(recorder.metrics, metrics_port, metrics_host)
        if metrics_port is not None
        else None
    )
    if server is not None:
        log.warning("metrics on http://%s:%d/metrics", metrics_host, server.server_port)
    if attach is not None:
        attach(recorder.handle)
        task = None
    else:
        task = asyncio.create_task(recorder.run(), name="telemetry-recorder")
    try:
        return await main
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:
            recorder.store.close()
        if server is not None:
            server.shutdown()
            server.server_close()
