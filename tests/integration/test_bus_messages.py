"""Receiving through bus.messages on a real broker: a disconnect ends the iteration, a
cancelled iteration loses nothing."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from coordinator.broker_process import BrokerProcess
from fedbus.protocol import bus

from .conftest import wait_until


async def test_iteration_ends_with_mqtt_error_when_the_broker_goes(
    settings: bus.BrokerSettings, broker: BrokerProcess
) -> None:
    topic = f"{settings.prefix}/gone"
    got: list[bytes] = []
    # aiomqtt 2.3 also raises the disconnection again as the client's block exits (2.5 not).
    with contextlib.suppress(bus.MqttError):
        async with bus.make_client(settings, "sub-gone", persistent=False) as sub:
            await sub.subscribe(topic, qos=1)
            async with bus.make_client(settings, "pub-gone", persistent=False) as pub:
                await pub.publish(topic, b"before", qos=1)
            with pytest.raises(bus.MqttError, match="Disconnected"):
                async with asyncio.timeout(30):
                    async for message in bus.messages(sub):
                        got.append(bytes(message.payload))  # type: ignore[arg-type]
                        broker.kill()  # the connection drops while the loop waits for more
    assert got == [b"before"]


async def test_a_cancelled_iteration_loses_no_message(settings: bus.BrokerSettings) -> None:
    topic = f"{settings.prefix}/cancel"
    async with (
        bus.make_client(settings, "sub-cancel", persistent=False) as sub,
        bus.make_client(settings, "pub-cancel", persistent=False) as pub,
    ):
        await sub.subscribe(topic, qos=1)
        first: list[bytes] = []

        async def consume() -> None:
            async for message in bus.messages(sub):
                first.append(bytes(message.payload))  # type: ignore[arg-type]

        consuming = asyncio.ensure_future(consume())
        await pub.publish(topic, b"one", qos=1)
        await wait_until(lambda: first == [b"one"])  # it was waiting, and woke for it
        consuming.cancel()  # now waiting again, for the next message
        with pytest.raises(asyncio.CancelledError):
            await consuming
        # The cancelled iteration's waiter must not take the next message: a new one gets it.
        await pub.publish(topic, b"two", qos=1)
        async with asyncio.timeout(10):
            async for message in bus.messages(sub):
                assert bytes(message.payload) == b"two"  # type: ignore[arg-type]
                break
        assert first == [b"one"]
