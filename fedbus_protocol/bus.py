"""MQTT connection settings and client construction, shared by both processes.

This is the only module of fedbus that imports aiomqtt; each process's thin asyncio shell
gets its clients from :func:`make_client` so both sides use MQTT 5 with persistent
sessions (fixed client id, ``clean_start`` false, a session expiry): QoS 1 messages sent
while one side is away are kept by the broker and delivered when it returns.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MqttError = aiomqtt.MqttError
Message = aiomqtt.Message
Client = aiomqtt.Client


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
    will = (
        aiomqtt.Will(will_topic, will_payload, qos=1, retain=True)
        if will_topic is not None
        else None
    )
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = settings.session_expiry if persistent else 0
    tls_context = ssl.create_default_context(cafile=settings.tls_ca) if settings.tls_ca else None
    return aiomqtt.Client(
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
    )


def backoff_delays(base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None):
    """Exponential backoff with full jitter: reconnecting fleets do not stampede the broker."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        yield rng.uniform(0, min(cap, base * 2**attempt))
        attempt += 1
