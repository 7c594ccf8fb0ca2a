"""fedbus's decoders for received PUBLISH and PUBACK packets, installed into paho.

paho (>= 2.2) decodes packets with module-level functions in ``paho.mqtt._packet``;
:func:`install_decoders` replaces two of them, process-wide, with the ones below, which
give the same results and errors with fewer copies and no per-message tables.
:mod:`fedbus.protocol.paho_speedups` decides whether to call it (a version guard, and
``--paho-speedups``); processes that never make a fedbus client keep paho's own.

- **PUBLISH decoding** copies the payload once instead of once per field.
- **Empty property sections** (every fedbus message: no MQTT 5 properties are used) and
  plain-success PUBACKs skip paho's ``Properties`` / ``ReasonCode`` constructors, which
  build two 27-entry tables per object: ~12 us per message warm, on every received
  PUBLISH and PUBACK. The objects handed on are equivalent (same class, same fields).
"""

from __future__ import annotations

from typing import Any

from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers
from paho.mqtt.reasoncodes import ReasonCode

try:
    from paho.mqtt import _packet
    from paho.mqtt.exception import MalformedPacket
except ImportError:  # paho < 2.2: no separate decoders to replace
    _packet = None  # type: ignore[assignment]

STOCK_DECODE_PUBLISH: Any = getattr(_packet, "decode_publish", None)
STOCK_DECODE_PUBACK: Any = getattr(_packet, "decode_puback", None)


# ---------------------------------------------------------------- cheap empty objects
def _template_copier(template: object) -> Any:
    """A function making copies of ``template`` that share its (read-only) lookup tables.

    paho's constructors rebuild the same name/identifier tables for every object; nothing
    in paho or aiomqtt writes to them afterwards. ``__dict__.update`` sets them without
    ``Properties.__setattr__`` (which checks every name it is given against its table).
    """
    cls, state = type(template), dict(vars(template))

    def copy() -> Any:
        obj = object.__new__(cls)
        obj.__dict__.update(state)
        return obj

    return copy


empty_publish_properties = _template_copier(Properties(PacketTypes.PUBLISH))
empty_puback_properties = _template_copier(Properties(PacketTypes.PUBACK))
puback_success = _template_copier(ReasonCode(PacketTypes.PUBACK))


# ---------------------------------------------------------------- PUBLISH decoding
# paho (2.2) decodes a received PUBLISH with struct.unpack("!H{n}s") and slices, each of
# which copies the whole rest of the packet: with MQTT 5 six copies of a 4 MB chunk, all
# on the event loop (aiomqtt reads the socket in a loop callback), 5 ms of it per chunk
# and the most frequent stack in the coordinator's loop stalls over 40 ms in
# bench/ingest.py. The replacement below parses the same fields through a memoryview and
# copies the payload once. It keeps paho's results and errors (MalformedPacket for what
# paho rejects; tests/unit/protocol/test_bus_decode.py compares the two) and is installed
# only where paho has that function and its result type has the expected fields.
_PUBLISH_FIELDS = ("dup", "qos", "retain", "topic", "mid", "properties", "payload")
_PUBACK_FIELDS = ("mid", "reason", "properties")
# Bytes past the property section that paho may read while parsing it (a 4-byte
# identifier and a 4-byte integer value that overrun a lying property length): handed
# over as well, so a malformed section decodes or fails exactly as in paho.
_PROPERTY_OVERRUN = 8


def _decode_publish(header: int, packet: bytes | bytearray, protocol: int) -> Any:
    """paho's ``decode_publish`` with one copy of the payload instead of one per field."""
    dup = ((header & 0x08) >> 3) != 0
    qos = (header & 0x06) >> 1
    retain = (header & 0x01) != 0
    with memoryview(packet) as view:
        end = len(view)
        if end < 2:
            raise MalformedPacket("PUBLISH too short for its topic length")
        pos = 2 + ((view[0] << 8) | view[1])
        if pos > end:
            raise MalformedPacket("PUBLISH topic runs past the packet")
        topic = bytes(view[2:pos])
        if protocol != MQTTProtocolVersion.MQTTv5 and len(topic) == 0:
            raise MalformedPacket("topic can't be empty in MQTTv3")
        mid = 0
        if qos > 0:
            if pos + 2 > end:
                raise MalformedPacket("PUBLISH too short for its packet id")
            mid = (view[pos] << 8) | view[pos + 1]
            pos += 2
        properties = None
        if protocol == MQTTProtocolVersion.MQTTv5:
            if pos < end and view[pos] == 0:
                properties = empty_publish_properties()  # no properties: length byte 0
                pos += 1
            else:
                properties = Properties(PacketTypes.PUBLISH)
                # paho's unpack re-slices whatever it is given once per field: give it the
                # property section (and what it may overrun), not the 4 MB behind it.
                length, length_bytes = VariableByteIntegers.decode(view[pos : pos + 4])
                section = bytes(view[pos : pos + length_bytes + length + _PROPERTY_OVERRUN])
                _, used = properties.unpack(section)
                pos += used
        payload = bytes(view[pos:])
    return _packet.PublishPacket(
        dup=dup,
        qos=qos,
        retain=retain,
        topic=topic,
        mid=mid,
        properties=properties,
        payload=payload,
    )


def _decode_puback(header: int, packet: bytes | bytearray, protocol: int) -> Any:
    """paho's ``decode_puback``, without building tables for a plain success (2 bytes)."""
    if len(packet) == 2 and protocol == MQTTProtocolVersion.MQTTv5:
        return _packet.PubackPacket(
            mid=(packet[0] << 8) | packet[1],
            reason=puback_success(),
            properties=empty_puback_properties(),
        )
    return STOCK_DECODE_PUBACK(header, packet, protocol)


# paho's own wrapper turns struct/index/value errors into MalformedPacket, as for its decoder.
_convert = getattr(_packet, "convert_exception", None)
FAST_DECODE_PUBLISH: Any = _convert(_decode_publish) if _convert is not None else None
FAST_DECODE_PUBACK: Any = _convert(_decode_puback) if _convert is not None else None


def _fields(name: str) -> Any:
    return getattr(getattr(_packet, name, None), "_fields", None)


def install_decoders() -> bool:
    """Make paho decode received PUBLISH and PUBACK packets as above (idempotent).

    True when both are in place; False (paho left alone) when this paho has no such
    decoders or their result types do not have the fields these fill in.
    """
    if _packet is None or FAST_DECODE_PUBLISH is None or STOCK_DECODE_PUBACK is None:
        return False
    if _fields("PublishPacket") != _PUBLISH_FIELDS or _fields("PubackPacket") != _PUBACK_FIELDS:
        return False  # a paho whose decoders we do not know: leave it alone
    if _packet.decode_publish is STOCK_DECODE_PUBLISH:
        _packet.decode_publish = FAST_DECODE_PUBLISH
    if _packet.decode_puback is STOCK_DECODE_PUBACK:
        _packet.decode_puback = FAST_DECODE_PUBACK
    return (
        _packet.decode_publish is FAST_DECODE_PUBLISH
        and _packet.decode_puback is FAST_DECODE_PUBACK
    )


def uninstall_decoders() -> None:
    """Give paho its own decoders back (idempotent)."""
    if _packet is not None and STOCK_DECODE_PUBLISH is not None:
        _packet.decode_publish = STOCK_DECODE_PUBLISH
        _packet.decode_puback = STOCK_DECODE_PUBACK


def decoders_installed() -> bool:
    """True when paho decodes with the functions above (process-wide)."""
    return (
        _packet is not None
        and FAST_DECODE_PUBLISH is not None
        and _packet.decode_publish is FAST_DECODE_PUBLISH
        and _packet.decode_puback is FAST_DECODE_PUBACK
    )
