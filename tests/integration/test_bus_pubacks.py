"""QoS 1 publishes that wait on one future (paho_speedups.publish), on a real broker."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from coordinator.broker_process import BrokerProcess
from fedbus.protocol import bus, paho_speedups

from .conftest import SPEEDUPS, count_tasks, receive


@contextmanager
def stopped(broker: BrokerProcess) -> Iterator[None]:
    """The broker stops reading and answering (SIGSTOP) until the block ends."""
    assert broker.process is not None
    broker.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        broker.process.send_signal(signal.SIGCONT)


@pytest.mark.skipif(
    paho_speedups.PUBACK_FUTURES not in SPEEDUPS, reason="puback_futures switched off"
)
async def test_link_publishes_wait_for_their_pubacks_without_a_task_each(
    settings: bus.BrokerSettings,
) -> None:
    topic = f"{settings.prefix}/acked"
    link = bus.Link()
    async with (
        bus.make_client(settings, "sub-acked", persistent=False) as sub,
        bus.make_client(settings, "pub-acked", persistent=False) as pub,
    ):
        await sub.subscribe(topic, qos=1)
        listening = asyncio.ensure_future(receive(sub, 100))
        link.up(pub)
        loop = asyncio.get_running_loop()
        made = count_tasks(loop)
        try:
            payloads = [f"m{i}".encode() for i in range(100)]
            # As the coordinator fans out a round's tasks: every publish awaits its PUBACK.
            sends = [
                link.publish(topic, p, transfer=f"t{i}", chunk_size=1 << 20)
                for i, p in enumerate(payloads)
            ]
            await asyncio.gather(*sends)
        finally:
            loop.set_task_factory(None)
        # gather wraps each coroutine in a task; nothing below it made one (aiomqtt's
        # publish made a wait_for task per message, Link a watcher task per publish).
        # The subscriber's side, aiomqtt's message iterator, makes a Queue.get task each.
        assert [name for name in made if name != "Queue.get"] == ["Link.publish"] * 100
        assert await listening == payloads
        # Every PUBACK reached its waiter, none is left behind.
        assert paho_speedups.pending_publishes(pub) == 0


async def test_aiomqtts_own_publish_still_gets_its_puback(settings: bus.BrokerSettings) -> None:
    topic = f"{settings.prefix}/stock"
    async with bus.make_client(settings, "pub-stock", persistent=False) as pub:
        # Through aiomqtt (the agents' retained status does this) and through ours, mixed.
        await asyncio.wait_for(
            asyncio.gather(
                pub.publish(topic, b"aiomqtt", qos=1),
                paho_speedups.publish(pub, topic, b"ours", 1, False),
                pub.publish(topic, b"aiomqtt again", qos=1),
            ),
            10,
        )


async def test_a_publish_without_a_puback_times_out(
    settings: bus.BrokerSettings, broker: BrokerProcess
) -> None:
    topic = f"{settings.prefix}/late"
    async with bus.make_client(settings, "pub-late", persistent=False) as pub:
        pub.timeout = 0.5
        with stopped(broker), pytest.raises(bus.MqttError, match="timed out"):
            await paho_speedups.publish(pub, topic, b"x", 1, False)
        assert paho_speedups.pending_publishes(pub) == 0


async def test_a_session_going_down_fails_its_waiting_publishes_and_link_resends(
    settings: bus.BrokerSettings, broker: BrokerProcess
) -> None:
    topic = f"{settings.prefix}/resend"
    link = bus.Link()
    async with (
        bus.make_client(settings, "sub-resend", persistent=False) as sub,
        bus.make_client(settings, "pub-first", persistent=False) as first,
    ):
        await sub.subscribe(topic, qos=1)
        link.up(first)
        with stopped(broker):
            sending = asyncio.ensure_future(
                link.publish(topic, b"survives", transfer="r", chunk_size=1 << 20)
            )
            await asyncio.sleep(0.3)
            assert not sending.done()  # waiting for a PUBACK that will not come
            link.down(first)  # the session ended (as the agent's session does on a drop)
            await asyncio.sleep(0.1)
            assert not sending.done()  # not lost: waiting for the next session
            assert paho_speedups.pending_publishes(first) == 0
        listening = asyncio.ensure_future(receive(sub, 2))
        async with bus.make_client(settings, "pub-second", persistent=False) as second:
            link.up(second)
            await asyncio.wait_for(sending, 10)
        # The broker got it from the first session (sent before it stopped answering) and
        # again from the second: a duplicate, which QoS 1 allows and receivers drop.
        assert await listening == [b"survives", b"survives"]


async def test_a_chunked_publish_cut_by_its_session_is_sent_whole_on_the_next(
    settings: bus.BrokerSettings, broker: BrokerProcess
) -> None:
    topic = f"{settings.prefix}/chunks"
    payload = bytes(range(256)) * 4096  # 1 MiB in 64 KiB chunks: 16 messages
    link = bus.Link()
    async with (
        bus.make_client(settings, "sub-chunks", persistent=False) as sub,
        bus.make_client(settings, "pub-chunks-1", persistent=False) as first,
    ):
        await sub.subscribe(topic, qos=1)
        link.up(first)
        with stopped(broker):
            sending = asyncio.ensure_future(
                link.publish(topic, payload, transfer="c", chunk_size=64 * 1024)
            )
            await asyncio.sleep(0.3)
            if paho_speedups.PUBACK_FUTURES in SPEEDUPS:
                # At most the window of chunks is out, each waiting for its PUBACK.
                assert 0 < paho_speedups.pending_publishes(first) <= bus.CHUNK_WINDOW
            link.down(first)
            await asyncio.sleep(0.1)
            assert not sending.done()
        async with bus.make_client(settings, "pub-chunks-2", persistent=False) as second:
            link.up(second)
            await asyncio.wait_for(sending, 10)
