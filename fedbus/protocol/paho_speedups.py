"""Faster paths through paho-mqtt and aiomqtt's internals, each guarded and each optional.

This and :mod:`fedbus.protocol.paho_decoders` are the only modules of fedbus that reach
into paho's and aiomqtt's private parts. Every patch below

- is installed only on the exact paho-mqtt and aiomqtt versions it was tested against
  (``TESTED``: the two ends of pyproject's ranges, which CI runs the suite on), and only
  when the internals it touches look as expected;
- can be forced off: ``BrokerSettings.speedups`` (``--paho-speedups`` on every command,
  default from ``FEDBUS_PAHO_SPEEDUPS``: ``on``, ``off`` or a comma-separated list);
- falls back to stock paho / aiomqtt behaviour when not installed, and start-up logs one
  warning naming each patch that is not active and why.

:func:`install` applies the wanted ones to a new client and returns the active ones;
:func:`active` says which are active on a client. The patches:

``decoders``          paho decodes received PUBLISH/PUBACK packets with fedbus's functions
                      (process-wide: paho_decoders.py).
``puback_futures``    QoS 1 publishes wait for their PUBACK on one future with one timer,
                      and a refused publish (PUBACK reason code) is logged.

Dropped, for no gain in a same-run A/B (bench/README.md): ``batched_writes`` (writes made on
the event loop sent in one batch per loop step, through paho's private ``_registered_write``)
and ``message_iterator`` (received messages taken from aiomqtt's queue without a task each,
through ``asyncio.Queue._getters``). Their names are still accepted by the switch, with a
warning, and change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import weakref
from collections.abc import Iterable
from typing import Any

import aiomqtt
from paho.mqtt.enums import MQTTErrorCode

from fedbus.protocol.paho_decoders import (
    FAST_DECODE_PUBACK,
    FAST_DECODE_PUBLISH,
    STOCK_DECODE_PUBACK,
    STOCK_DECODE_PUBLISH,
    decoders_installed,
    empty_publish_properties,
    install_decoders,
    uninstall_decoders,
)

__all__ = [
    "ALL",
    "FAST_DECODE_PUBACK",
    "FAST_DECODE_PUBLISH",
    "STOCK_DECODE_PUBACK",
    "STOCK_DECODE_PUBLISH",
    "TESTED",
    "abandon_publishes",
    "active",
    "decoders_installed",
    "empty_publish_properties",
    "install",
    "install_decoders",
    "parse_speedups",
    "pending_publishes",
    "publish",
    "uninstall_decoders",
]

log = logging.getLogger(__name__)

DECODERS = "decoders"
PUBACK_FUTURES = "puback_futures"
ALL = frozenset({DECODERS, PUBACK_FUTURES})
# Patches of earlier releases, dropped for no measured gain: accepted by the switch, ignored.
DROPPED = frozenset({"batched_writes", "message_iterator"})
ENV_VAR = "FEDBUS_PAHO_SPEEDUPS"

# The exact versions each patch was run against, whole suite and benchmarks: (paho-mqtt,
# aiomqtt). A version not listed gets stock behaviour and a warning until someone runs the
# suite on it and adds it here (and widens pyproject's range).
_PAHO = frozenset({"2.1.0", "2.2.0"})
_AIOMQTT = frozenset({"2.3.0", "2.5.1"})
TESTED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    DECODERS: (frozenset({"2.2.0"}), _AIOMQTT),  # paho < 2.2 has no separate decoders
    PUBACK_FUTURES: (_PAHO, _AIOMQTT),
}


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


PAHO_VERSION = _version("paho-mqtt")
AIOMQTT_VERSION = _version("aiomqtt")


def parse_speedups(text: str, source: str = ENV_VAR) -> frozenset[str]:
    """``on`` / ``all``, ``off`` / ``none``, or a comma-separated list of patch names.

    Raises ValueError naming ``source`` (the option or variable it came from).
    """
    value = text.strip().lower()
    if value in ("on", "all", "1", "true"):
        return ALL
    if value in ("off", "none", "0", "false", ""):
        return frozenset()
    names = frozenset(name.strip() for name in value.split(",") if name.strip())
    if dropped := sorted(names & DROPPED):
        log.warning(
            "%s: paho speed-up %s was dropped (no measured gain) and is ignored",
            source,
            ", ".join(dropped),
        )
        names -= DROPPED
    unknown = sorted(names - ALL)
    if unknown:
        raise ValueError(
            f"{source}: unknown paho speed-up {', '.join(map(repr, unknown))}; "
            f"expected on, off or a comma-separated list of {', '.join(sorted(ALL))}"
        )
    return names


def _untested(name: str) -> str | None:
    """Why ``name`` must not be installed on these versions; None when it may."""
    paho_ok, aiomqtt_ok = TESTED[name]
    if PAHO_VERSION not in paho_ok:
        return f"paho-mqtt {PAHO_VERSION} is not a version it was tested on ({', '.join(sorted(paho_ok))})"
    if AIOMQTT_VERSION not in aiomqtt_ok:
        return f"aiomqtt {AIOMQTT_VERSION} is not a version it was tested on ({', '.join(sorted(aiomqtt_ok))})"
    return None


# Which patches are active on each client (weak: a client's entry goes with it), and the
# patches already warned about in this process (one warning each, at the first client).
_ACTIVE: weakref.WeakKeyDictionary[aiomqtt.Client, frozenset[str]] = weakref.WeakKeyDictionary()
_WARNED: set[str] = set()


def install(client: aiomqtt.Client, wanted: Iterable[str] = ALL) -> frozenset[str]:
    """Apply the ``wanted`` patches that pass their guards to ``client``; the active ones.

    Logs one warning, the first time, naming each patch that is not active and why.
    """
    wanted = frozenset(wanted)
    installers = {
        DECODERS: lambda: install_decoders(),
        PUBACK_FUTURES: lambda: _track_pubacks(client),
    }
    active: set[str] = set()
    missing: dict[str, str] = {}
    for name in sorted(ALL):
        if name not in wanted:
            missing[name] = "switched off"
        elif (why := _untested(name)) is not None:
            missing[name] = why
        elif installers[name]():
            active.add(name)
        else:
            missing[name] = "the internals it relies on are not as expected"
    if DECODERS in missing and decoders_installed():  # process-wide: an earlier client's
        active.add(DECODERS)
        del missing[DECODERS]
    new = {name: why for name, why in missing.items() if name not in _WARNED}
    if new:
        _WARNED.update(new)
        log.warning(
            "paho speed-ups not active, stock paho/aiomqtt behaviour instead: %s",
            "; ".join(f"{name} ({why})" for name, why in new.items()),
        )
    _ACTIVE[client] = frozenset(active)
    return _ACTIVE[client]


def active(client: aiomqtt.Client) -> frozenset[str]:
    """The patches active on ``client`` (empty for a client :func:`install` never saw)."""
    return _ACTIVE.get(client, frozenset())


# ---------------------------------------------------------------- acknowledged publishes
_ACKS = "_fedbus_pubacks"


def _track_pubacks(client: aiomqtt.Client) -> bool:
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
    """``client.publish(topic, payload, qos=qos, retain=retain)``, ended early by
    :func:`abandon_publishes`.

    As aiomqtt's: raises ``MqttCodeError`` when paho refuses the message and
    ``MqttError`` when no PUBACK comes within ``client.timeout`` seconds or the session is
    abandoned. With ``puback_futures`` it waits on one future, and a PUBACK with a failure
    reason code (which aiomqtt ignores) completes the publish with a warning naming the
    topic and reason; without, it is aiomqtt's publish raced against the abandonment.
    """
    acks: dict[int, tuple[asyncio.Future[None], str]] | None = vars(client).get(_ACKS)
    if acks is None:
        await _stock_publish(client, topic, payload, qos, retain)
        return
    info = client._client.publish(topic, payload, qos, retain)
    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
        raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
    if qos == 0 or info.is_published():
        return
    loop = asyncio.get_running_loop()
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


# Per client, set (to the reason) when its session is abandoned: stock publishes race it.
_ABANDONED: weakref.WeakKeyDictionary[aiomqtt.Client, asyncio.Future[str]] = (
    weakref.WeakKeyDictionary()
)


async def _stock_publish(
    client: aiomqtt.Client, topic: str, payload: bytes | bytearray, qos: int, retain: bool
) -> None:
    abandoned = _ABANDONED.get(client)
    if abandoned is None:
        abandoned = _ABANDONED[client] = asyncio.get_running_loop().create_future()
    if abandoned.done():
        raise aiomqtt.MqttError(abandoned.result())
    sending = asyncio.ensure_future(client.publish(topic, payload, qos=qos, retain=retain))
    try:
        await asyncio.wait((sending, abandoned), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not sending.done():
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
    if sending.cancelled():
        raise aiomqtt.MqttError(abandoned.result())
    sending.result()


def pending_publishes(client: aiomqtt.Client) -> int:
    """How many :func:`publish` calls on ``client`` wait for a PUBACK (with
    ``puback_futures``; 0 without: aiomqtt keeps its own count)."""
    return len(vars(client).get(_ACKS, {}))


def abandon_publishes(client: aiomqtt.Client, reason: str) -> None:
    """Fail every :func:`publish` still waiting for a PUBACK on ``client`` (session over)."""
    acks: dict[int, tuple[asyncio.Future[None], str]] = vars(client).get(_ACKS, {})
    for waiter, _ in acks.values():
        if not waiter.done():
            waiter.set_exception(aiomqtt.MqttError(reason))
    acks.clear()
    abandoned = _ABANDONED.get(client)
    if abandoned is None:
        with contextlib.suppress(RuntimeError):  # no running loop: nothing can be waiting
            abandoned = _ABANDONED[client] = asyncio.get_running_loop().create_future()
    if abandoned is not None and not abandoned.done():
        abandoned.set_result(reason)


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(aiomqtt.MqttError("Operation timed out"))

