"""Received messages taken without a task each (paho_speedups.messages), on a real broker."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.broker_process import BrokerProcess
from fedbus.protocol import bus

from .conftest import count_tasks


async def test_messages_arrive_in_order_without_a_task_each(
    settings: bus.BrokerSettings,
) -> None:
    topic = f"{settings.prefix}/in"
    loop = asyncio.get_running_loop()
    async with (
        bus.make_client(settings, "sub-in", persistent=False) as sub,
        bus.make_client(settings, "pub-in", persistent=False) as pub,
    ):
        await sub.subscribe(topic, qos=1)
        payloads = [f"m{i}".encode() for i in range(200)]
        got: list[bytes] = []
        made = count_tasks(loop)
        try:
            sending = asyncio.gather(*(pub.publish(topic, p, qos=1) for p in payloads))
            async with asyncio.timeout(30):
                async for message in bus.messages(sub):
                    got.append(bytes(message.payload))  # type: ignore[arg-type]
                    if len(got) == len(payloads):
                        break
            await sending
        finally:
            loop.set_task_factory(None)
        assert got == payloads
        # The publisher's side (aiomqtt's publish: a wait_for task each) made tasks; the
        # iteration made none (aiomqtt's iterator: a Queue.get task per message).
        assert "Queue.get" not in made
        assert made  # the counter did see the tasks that were made
        assert not sub._queue._getters  # nothing left waiting in aiomqtt's queue


async def test_iteration_ends_with_mqtt_error_when_the_broker_goes(
    settings: bus.BrokerSettings, broker: BrokerProcess
) -> None:
    topic = f"{settings.prefix}/gone"
    got: list[bytes] = []
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


async def test_a_cancelled_iteration_leaves_no_waiter_behind(
    settings: bus.BrokerSettings,
) -> None:
    async with bus.make_client(settings, "sub-cancel", persistent=False) as sub:

        async def consume() -> None:
            async for _ in bus.messages(sub):
                pass

        consuming = asyncio.ensure_future(consume())
        await asyncio.sleep(0.2)
        assert len(sub._queue._getters) == 1  # waiting for a message
        consuming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consuming
        assert not sub._queue._getters
