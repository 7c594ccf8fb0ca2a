"""fedbus's PUBLISH and PUBACK decoders for paho give paho's own results and errors."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fedbus.protocol import bus, paho_speedups

pytestmark = pytest.mark.skipif(
    paho_speedups.FAST_DECODE_PUBLISH is None, reason="this paho has no separate PUBLISH decoder"
)

V5, V311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311


def outcome(decode: Any, header: int, packet: bytes, protocol: int) -> tuple[Any, ...]:
    """What a decoder makes of a packet: its fields, or the type of error it raised."""
    from paho.mqtt.exception import MalformedPacket

    try:
        p = decode(header, bytearray(packet), protocol)
    except MalformedPacket:
        return ("malformed",)
    props = None if p.properties is None else str(p.properties)
    return (p.dup, p.qos, p.retain, p.topic, p.mid, props, type(p.payload), p.payload)


def publish_packet(topic: bytes, mid: int | None, props: bytes | None, payload: bytes) -> bytes:
    """The variable header and payload of a PUBLISH (what paho hands its decoder)."""
    out = struct.pack("!H", len(topic)) + topic
    if mid is not None:
        out += struct.pack("!H", mid)
    if props is not None:
        out += props
    return out + payload


def packed_properties(**values: Any) -> bytes:
    p = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(p, name, value)
    return bytes(p.pack())


def same(header: int, packet: bytes, protocol: int) -> None:
    assert outcome(paho_speedups.FAST_DECODE_PUBLISH, header, packet, protocol) == outcome(
        paho_speedups.STOCK_DECODE_PUBLISH, header, packet, protocol
    )


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("protocol", [V5, V311])
def test_well_formed_publishes_decode_as_in_paho(qos: int, protocol: int) -> None:
    props = (
        packed_properties(
            MessageExpiryInterval=30,
            ContentType="application/x",
            CorrelationData=b"\x00\x01",
            UserProperty=[("a", "1"), ("b", "2")],
            SubscriptionIdentifier=[7],
            TopicAlias=3,
        )
        if protocol == V5
        else None
    )
    for payload in (b"", b"x", bytes(range(256)) * 40):
        packet = publish_packet(b"fedbus/jobs/j/updates/a", 9 if qos else None, props, payload)
        header = 0x30 | (qos << 1) | 0x09  # dup and retain set
        same(header, packet, protocol)
        decoded = paho_speedups.FAST_DECODE_PUBLISH(header, bytearray(packet), protocol)
        assert decoded.payload == payload and type(decoded.payload) is bytes


@pytest.mark.parametrize("protocol", [V5, V311])
def test_publishes_without_properties_decode_as_in_paho(protocol: int) -> None:
    # Every fedbus message: an MQTT 5 property length of 0 (the empty-section shortcut).
    packet = publish_packet(b"fedbus/agents/a/tasks", 3, b"\x00" if protocol == V5 else None, b"x")
    same(0x32, packet, protocol)
    decoded = paho_speedups.FAST_DECODE_PUBLISH(0x32, bytearray(packet), protocol)
    if protocol == V5:
        assert isinstance(decoded.properties, Properties) and decoded.properties.isEmpty()
        decoded.properties.MessageExpiryInterval = 5  # its own object, still a Properties
        assert str(paho_speedups.empty_publish_properties()) == "[]"


def puback_outcome(decode: Any, packet: bytes, protocol: int) -> tuple[Any, ...]:
    from paho.mqtt.exception import MalformedPacket

    try:
        p = decode(0x40, bytearray(packet), protocol)
    except MalformedPacket:
        return ("malformed",)
    reason = p.reason
    return (p.mid, reason.packetType, reason.value, str(reason), str(p.properties))


@pytest.mark.parametrize(
    "packet",
    [
        b"\x00\x07",  # success, the common case
        b"\xff\xfe",
        b"\x00\x07\x00",  # success spelled out
        b"\x00\x07\x10",  # no matching subscribers
        b"\x00\x07\x80\x00",  # unspecified error, empty properties
        b"\x00\x07\x87\x05\x1f\x00\x02no",  # not authorized, with a reason string
        b"",
        b"\x00",
    ],
)
@pytest.mark.parametrize("protocol", [V5, V311])
def test_pubacks_decode_as_in_paho(packet: bytes, protocol: int) -> None:
    assert puback_outcome(paho_speedups.FAST_DECODE_PUBACK, packet, protocol) == puback_outcome(
        paho_speedups.STOCK_DECODE_PUBACK, packet, protocol
    )


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x00",
        b"\x00\x05abc",  # topic longer than the packet
        b"\x00\x00",  # empty topic (an error before MQTT 5)
        b"\x00\x01t\x00",  # packet id cut short
        b"\x00\x01t\x00\x01",  # no property length
        b"\x00\x01t\x00\x01\xff\xff\xff\xff\x01",  # property length over four bytes
        b"\x00\x01t\x00\x01\x05\x02\x00",  # a four-byte property cut short
        b"\x00\x01t\x00\x01\x01\x02\x00\x00\x00\x01payload",  # lying property length
        b"\x00\x01t\x00\x01\x03\x63\x00\x00rest",  # an unknown property id
    ],
)
@pytest.mark.parametrize("protocol", [V5, V311])
def test_malformed_publishes_fail_or_decode_as_in_paho(packet: bytes, protocol: int) -> None:
    same(0x32, packet, protocol)


@settings(max_examples=400, deadline=None)
@given(
    header=st.integers(0x30, 0x3F),
    protocol=st.sampled_from([V5, V311]),
    head=st.binary(max_size=24),
    payload=st.binary(max_size=64),
)
def test_any_bytes_decode_or_fail_as_in_paho(
    header: int, protocol: int, head: bytes, payload: bytes
) -> None:
    same(header, head + payload, protocol)


@settings(max_examples=200, deadline=None)
@given(
    topic=st.binary(max_size=40),
    mid=st.integers(0, 0xFFFF),
    prop_bytes=st.binary(max_size=16),
    declared=st.integers(0, 20),
    payload=st.binary(max_size=64),
)
def test_garbled_property_sections_decode_or_fail_as_in_paho(
    topic: bytes, mid: int, prop_bytes: bytes, declared: int, payload: bytes
) -> None:
    # A property length that may lie about the bytes behind it.
    packet = publish_packet(topic, mid, bytes([declared]) + prop_bytes, payload)
    same(0x32, packet, V5)


async def test_make_client_installs_it_once() -> None:
    from paho.mqtt import _packet

    had = paho_speedups.decoders_installed()
    try:
        bus.make_client(bus.BrokerSettings(speedups=frozenset({"decoders"})), "decoder-test")
        assert _packet.decode_publish is paho_speedups.FAST_DECODE_PUBLISH
        assert _packet.decode_puback is paho_speedups.FAST_DECODE_PUBACK
        assert paho_speedups.install_decoders() is True
        assert _packet.decode_publish is paho_speedups.FAST_DECODE_PUBLISH
        assert _packet.decode_puback is paho_speedups.FAST_DECODE_PUBACK
    finally:  # process-wide: leave them as the rest of the suite had them (on or off)
        if not had:
            paho_speedups.uninstall_decoders()
