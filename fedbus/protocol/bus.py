"""MQTT connection settings and client construction, shared by both processes.

This is the only module of fedbus that imports aiomqtt, with ``paho_speedups`` (its
faster paths through paho and aiomqtt); each process's thin asyncio shell gets its
clients from :func:`make_client` so both sides use MQTT 5 with persistent
sessions (fixed client id, ``clean_start`` false, a session expiry): QoS 1 messages sent
while one side is away are kept by the broker and delivered when it returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions as SubscribeOptions  # re-exported

from fedbus.protocol import chunking, paho_speedups
from fedbus.protocol.chunking import DEFAULT_CHUNK_SIZE

log = logging.getLogger(__name__)

MqttError = aiomqtt.MqttError
Message = aiomqtt.Message
Client = aiomqtt.Client


def messages(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Message]:
    """``async for message in bus.messages(client)``: the client's messages, in order;
    aiomqtt's own iterator, not wrapped (every update chunk goes through it)."""
    return client.messages


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "fedbus"
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    keepalive: int = 15
    session_expiry: int = 3600
    # paho keeps at most this many QoS>0 messages in flight per client; fan-out of tasks
    # to hundreds of agents would otherwise queue behind the default of 20.
    max_inflight: int = 1000
    # Payloads above this travel as chunks (fedbus.protocol.chunking).
    chunk_size: int = DEFAULT_CHUNK_SIZE
    # The paho/aiomqtt patches make_client may install (paho_speedups; --paho-speedups).
    speedups: frozenset[str] = paho_speedups.ALL


def parse_broker(spec: str, default_port: int = 1883) -> tuple[str, int]:
    """``host:port`` or ``host`` -> (host, port); raises ValueError naming the input."""
    host, sep, port = spec.rpartition(":")
    if not sep:
        return spec, default_port
    try:
        return host or "127.0.0.1", int(port)
    except ValueError as exc:
        raise ValueError(f"broker {spec!r} must look like HOST:PORT") from exc


def make_client(
    settings: BrokerSettings,
    client_id: str,
    *,
    will_topic: str | None = None,
    will_payload: bytes | None = None,
    persistent: bool = True,
) -> aiomqtt.Client:
    """An MQTT 5 client for ``settings``, with the speed-ups of ``settings.speedups`` that
    pass their version guards (:func:`speedups` says which; the others log a warning)."""
    will = (
        aiomqtt.Will(will_topic, will_payload, qos=1, retain=True)
        if will_topic is not None
        else None
    )
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = settings.session_expiry if persistent else 0
    tls_context = ssl.create_default_context(cafile=settings.tls_ca) if settings.tls_ca else None
    client = aiomqtt.Client(
        settings.host,
        settings.port,
        identifier=client_id,
        username=settings.username,
        password=settings.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not persistent,
        will=will,
        keepalive=settings.keepalive,
        properties=properties,
        max_inflight_messages=settings.max_inflight,
        tls_context=tls_context,
        timeout=30,
        # Nagle's algorithm held each small QoS 1 publish ~40 ms waiting for the previous
        # ACK (measured: TEST_RESULT -> ROUND_END 38-47 ms every round; 0-4 ms without).
        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
    )
    # aiomqtt warns once more than 10 publishes await their PUBACK; fedbus keeps a round's
    # fan-out of tasks and its events in flight at once on purpose, up to max_inflight.
    client.pending_calls_threshold = max(settings.max_inflight, 10)
    installed = paho_speedups.install(client, settings.speedups)
    log.debug(
        "mqtt client %s: paho speed-ups %s", client_id, ", ".join(sorted(installed)) or "none"
    )
    return client


def speedups(client: aiomqtt.Client) -> frozenset[str]:
    """The paho speed-ups active on a client from :func:`make_client`."""
    return paho_speedups.active(client)


class Backoff:
    """Exponential backoff with full jitter, so a reconnecting fleet does not stampede the
    broker; a connection that stayed up for ``reset_after`` seconds starts the series over."""

    def __init__(
        self,
        base: float = 0.2,
        cap: float = 10.0,
        reset_after: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.base, self.cap, self.reset_after = base, cap, reset_after
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self, connected_for: float) -> float:
        if connected_for >= self.reset_after:
            self.attempt = 0
        delay = self.rng.uniform(0, min(self.cap, self.base * 2**self.attempt))
        self.attempt += 1
        return delay


async def run_with_reconnect(
    session: Callable[[], Awaitable[None]],
    name: str,
    on_lost: Callable[[], None] | None = None,
) -> None:
    """Run ``session`` forever, reconnecting with :class:`Backoff` when the broker goes away."""
    backoff = Backoff()
    while True:
        began = time.monotonic()
        try:
            await session()
        except MqttError as exc:
            if on_lost is not None:
                on_lost()
            delay = backoff.next_delay(time.monotonic() - began)
            log.warning("%s: connection lost (%s); retrying in %.1fs", name, exc, delay)
            await asyncio.sleep(delay)


# Chunks in flight at once per large publish: enough to keep the socket and the broker's
# store-and-forward busy, few enough to bound the copies held in paho's queue.
CHUNK_WINDOW = 4


async def publish_large(
    client: aiomqtt.Client,
    topic: str,
    payload: bytes | bytearray,
    *,
    transfer: str,
    chunk_size: int,
    qos: int = 1,
    retain: bool = False,
    chunk_topic: Callable[[int], str] | None = None,
) -> int:
    """Publish ``payload`` whole, or as chunks when it exceeds ``chunk_size``.

    Chunks go to ``topic`` in order (QoS 1 keeps one publisher's order on a topic), or to
    ``chunk_topic(index)`` (retained models: one retained message per chunk topic).
    Returns the number of messages sent.
    """
    if len(payload) <= chunk_size:
        await paho_speedups.publish(client, topic, payload, qos, retain)
        return 1
    window = asyncio.Semaphore(CHUNK_WINDOW)
    failed = False  # one chunk's failure (a session ending) ends the whole publish

    async def send(index: int, chunk: bytearray) -> None:
        nonlocal failed
        try:
            target = chunk_topic(index) if chunk_topic is not None else topic
            await paho_speedups.publish(client, target, chunk, qos, retain)
        except BaseException:
            failed = True
            raise
        finally:
            window.release()

    sends = []
    # Hashing 44 MB takes ~30 ms: off the event loop (hashlib releases the GIL).
    digest = await asyncio.to_thread(lambda: hashlib.sha256(memoryview(payload)).digest())
    for index, chunk in enumerate(chunking.split(payload, transfer, chunk_size, digest=digest)):
        await window.acquire()
        if failed:
            break
        sends.append(asyncio.ensure_future(send(index, chunk)))
    await asyncio.gather(*sends)
    return len(sends)


class Link:
    """The current connection of a reconnecting client, for publishers that outlive it.

    Each session calls :meth:`up` once subscribed and :meth:`down` when it ends. A publish
    started on a session that dies does not wait out the PUBACK timeout on a dead socket:
    its wait for the PUBACK fails when its session ends, and it is sent again on the next
    one (QoS 1 already allows a duplicate; receivers drop them). Only the session that is
    current may mark the link down, so a late failure of an old session cannot stall the
    new one.
    """

    def __init__(self) -> None:
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()

    def up(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.connected.set()

    def down(self, client: aiomqtt.Client | None = None) -> None:
        if client is not None and client is not self.client:
            return  # an old session's failure: the current one is fine
        ended, self.client = self.client, None
        self.connected.clear()
        if ended is not None:
            paho_speedups.abandon_publishes(ended, "session ended")

    async def publish(
        self,
        topic: str,
        payload: bytes | bytearray,
        *,
        transfer: str,
        chunk_size: int,
        qos: int = 1,
        retain: bool = False,
        chunk_topic: Callable[[int], str] | None = None,
    ) -> None:
        """Publish on the current session, retrying on the next one until it goes through."""
        while True:
            await self.connected.wait()
            client = self.client
            assert client is not None
            try:
                await publish_large(
                    client,
                    topic,
                    payload,
                    transfer=transfer,
                    chunk_size=chunk_size,
                    qos=qos,
                    retain=retain,
                    chunk_topic=chunk_topic,
                )
                return
            except MqttError as exc:
                log.info("publish to %s interrupted (%s); retrying on the next session", topic, exc)
                self.down(client)
                await asyncio.sleep(0.05)
