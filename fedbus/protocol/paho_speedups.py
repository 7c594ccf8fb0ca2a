"""Faster paths through paho-mqtt for what fedbus does on every message, same results.

This is the only module of fedbus that reaches into paho's and aiomqtt's internals; each
speed-up checks that the internals it relies on look as expected and otherwise leaves
paho alone. Installed by :func:`fedbus.protocol.bus.make_client`.

- **PUBLISH decoding** copies the payload once instead of once per field.
- **Empty property sections** (every fedbus message: no MQTT 5 properties are used) and
  plain-success PUBACKs skip paho's ``Properties`` / ``ReasonCode`` constructors, which
  build two 27-entry tables per object: ~12 us per message warm, on every received
  PUBLISH and PUBACK. The objects handed on are equivalent (same class, same fields).
- **Writes on the event loop** are sent in one batch at the end of the loop's current
  step instead of through ``call_soon_threadsafe`` + ``add_writer`` per packet.
- **QoS 1 publishes** wait for their PUBACK on one future with one timer, instead of
  aiomqtt's event, ``wait_for`` task and scan of every pending call.
- **Received messages** are taken from aiomqtt's queue without a task per message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers
from paho.mqtt.reasoncodes import ReasonCode

try:
    from paho.mqtt import _packet
    from paho.mqtt.exception import MalformedPacket
except ImportError:  # paho < 2.2: no separate decoders to replace
    _packet = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

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

    Processes that never make a fedbus client (the bench's stock-paho reference) keep
    paho's own. True when both are in place.
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


# ---------------------------------------------------------------- batched writes
def batch_loop_writes(client: aiomqtt.Client) -> bool:
    """Send what paho queues on the event loop's thread at the end of the loop's step.

    aiomqtt answers paho's "I have data to write" with ``call_soon_threadsafe(add_writer)``
    for every packet queued while the socket had nothing pending: a self-pipe write and
    read, two ``epoll_ctl`` calls and an extra loop iteration before the ``send``. Each
    PUBACK, task, result and update paid that (a coordinator sends ~150 packets a round
    at N=50). On the loop's own thread this sends everything queued so far with one
    ``loop_write`` from a ``call_soon`` callback, and registers a writer only when the
    socket would block. Other threads (paho's CONNECT runs in an executor) keep
    aiomqtt's path. False (nothing changed) when aiomqtt's internals are not as expected.
    """
    paho = getattr(client, "_client", None)
    loop = getattr(client, "_loop", None)
    disconnected = getattr(client, "_disconnected", None)
    threadsafe = getattr(paho, "on_socket_register_write", None)
    if paho is None or loop is None or disconnected is None or threadsafe is None:
        return False
    loop_thread = threading.get_ident()  # aiomqtt.Client is made on the loop's thread
    scheduled = False

    def fail(exc: Exception) -> None:
        # As aiomqtt's own writer callback: a failed write means a broken connection.
        if not disconnected.done():
            disconnected.set_exception(exc)

    def write_ready() -> None:
        try:
            paho.loop_write()
        except Exception as exc:
            fail(exc)

    def flush(sock: Any) -> None:
        nonlocal scheduled
        scheduled = False
        try:
            paho.loop_write()
        except Exception as exc:
            fail(exc)
            return
        # paho unregisters (``_registered_write`` false) once everything went out; if the
        # socket would block, it stays registered and waits for ours to be writable.
        if paho.want_write() and paho._registered_write and paho.socket() is sock:
            loop.add_writer(sock.fileno(), write_ready)

    def register_write(client_: Any, userdata: Any, sock: Any) -> None:
        nonlocal scheduled
        if threading.get_ident() != loop_thread:
            threadsafe(client_, userdata, sock)
        elif not scheduled:
            scheduled = True
            loop.call_soon(flush, sock)

    paho.on_socket_register_write = register_write
    return True


# ---------------------------------------------------------------- acknowledged publishes
_ACKS = "_fedbus_pubacks"


def track_pubacks(client: aiomqtt.Client) -> bool:
    """Let :func:`publish` wait for a PUBACK on a plain future (idempotent).

    aiomqtt's ``publish`` waits for each PUBACK with an ``asyncio.Event`` inside
    ``asyncio.wait_for``: a task and a timer handle per message, and a list of every
    pending call built per publish (quadratic in a round's fan-out of tasks). The
    coordinator publishes ~55 QoS 1 messages a round at N=50, an agent one. PUBACKs of
    messages sent through :func:`publish` resolve a future here; all others still go to
    aiomqtt's callback. False (nothing changed) when aiomqtt's internals are not as
    expected; :func:`publish` then uses aiomqtt's.
    """
    paho = getattr(client, "_client", None)
    loop = getattr(client, "_loop", None)
    stock = getattr(paho, "on_publish", None)
    if paho is None or loop is None or stock is None:
        return False
    if _ACKS in vars(client):
        return True
    acks: dict[int, tuple[asyncio.Future[None], str]] = {}

    def on_publish(client_: Any, userdata: Any, mid: int, *rest: Any) -> None:
        entry = acks.pop(mid, None)
        if entry is None:
            stock(client_, userdata, mid, *rest)
            return
        waiter, topic = entry
        reason = rest[0] if rest else None
        if getattr(reason, "is_failure", False):
            # The broker took the message and dropped it (an ACL's "Not authorized"):
            # as with aiomqtt the publish completes, but it is not silent any more.
            log.warning("broker refused the publish to %s: %s", topic, reason)
        if not waiter.done():
            waiter.set_result(None)

    paho.on_publish = on_publish
    vars(client)[_ACKS] = acks
    return True


async def publish(
    client: aiomqtt.Client, topic: str, payload: bytes | bytearray, qos: int, retain: bool
) -> None:
    """``client.publish(topic, payload, qos=qos, retain=retain)``, waiting on one future.

    As aiomqtt's: raises ``MqttCodeError`` when paho refuses the message and
    ``MqttError`` when no PUBACK comes within ``client.timeout`` seconds or the session is
    abandoned (:func:`abandon_publishes`). A PUBACK with a failure reason code completes
    the publish too (aiomqtt ignores them), with a warning naming the topic and reason.
    """
    acks: dict[int, tuple[asyncio.Future[None], str]] | None = vars(client).get(_ACKS)
    if acks is None:
        await client.publish(topic, payload, qos=qos, retain=retain)
        return
    info = client._client.publish(topic, payload, qos, retain)
    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
        raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
    if qos == 0 or info.is_published():
        return
    loop = client._loop
    waiter = loop.create_future()
    acks[info.mid] = (waiter, topic)
    timer = loop.call_later(client.timeout, _time_out, waiter)
    try:
        await waiter
    finally:
        timer.cancel()
        entry = acks.get(info.mid)
        if entry is not None and entry[0] is waiter:
            del acks[info.mid]


def abandon_publishes(client: aiomqtt.Client, reason: str) -> None:
    """Fail every :func:`publish` still waiting for a PUBACK on ``client`` (session over)."""
    acks: dict[int, tuple[asyncio.Future[None], str]] = vars(client).get(_ACKS, {})
    for waiter, _ in acks.values():
        if not waiter.done():
            waiter.set_exception(aiomqtt.MqttError(reason))
    acks.clear()


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(aiomqtt.MqttError("Operation timed out"))


# ---------------------------------------------------------------- received messages
async def messages(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Message]:
    """``client.messages``, without a task and an ``asyncio.wait`` per message.

    aiomqtt's iterator wraps every ``queue.get()`` in a task and waits for it or the
    disconnect with ``asyncio.wait``. This takes what is queued at once and otherwise
    waits on one future that the queue's next put (as for any ``get``) or the disconnect
    wakes. Same order and same end: ``MqttError`` once disconnected, after whatever
    arrived before. Falls back to aiomqtt's iterator when its internals are not as
    expected.
    """
    queue = getattr(client, "_queue", None)
    disconnected = getattr(client, "_disconnected", None)
    getters = getattr(queue, "_getters", None)
    if queue is None or disconnected is None or not isinstance(getters, collections.deque):
        async for message in client.messages:
            yield message
        return
    loop = asyncio.get_running_loop()
    while True:
        if not queue.empty():
            yield queue.get_nowait()
            continue
        if disconnected.done():
            raise aiomqtt.MqttError(
                "Disconnected during message iteration"
            ) from disconnected.exception()
        waiter = loop.create_future()

        def wake(_: object, waiter: asyncio.Future[None] = waiter) -> None:
            if not waiter.done():
                waiter.set_result(None)

        getters.append(waiter)  # asyncio.Queue.put_nowait wakes its first waiting getter
        disconnected.add_done_callback(wake)
        try:
            await waiter
        finally:
            disconnected.remove_done_callback(wake)
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                getters.remove(waiter)
