"""Writes batched on the event loop (paho_speedups.batch_loop_writes), on a real broker."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

import pytest

from coordinator.broker_process import BrokerProcess
from fedbus.protocol import bus

from .conftest import receive


def count_calls(monkeypatch: pytest.MonkeyPatch, loop: Any, names: list[str]) -> Counter[str]:
    calls: Counter[str] = Counter()
    for name in names:
        original = getattr(loop, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(loop, name, counted)
    return calls


async def test_small_publishes_go_out_without_a_writer_or_a_wakeup(
    settings: bus.BrokerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"{settings.prefix}/w"
    async with (
        bus.make_client(settings, "sub-w", persistent=False) as sub,
        bus.make_client(settings, "pub-w", persistent=False) as pub,
    ):
        await sub.subscribe(topic, qos=1)
        listening = asyncio.ensure_future(receive(sub, 200))
        calls = count_calls(
            monkeypatch, asyncio.get_running_loop(), ["call_soon_threadsafe", "add_writer"]
        )
        payloads = [f"m{i}".encode() for i in range(200)]
        # All in flight at once, each awaiting its PUBACK, as the coordinator's task fan-out.
        await asyncio.gather(*(pub.publish(topic, p, qos=1) for p in payloads))
        assert await listening == payloads  # all of them, in publish order
        # Each PUBLISH the subscriber acknowledged and each one published went out from
        # a call_soon batch: no self-pipe wake-up, no writer registered (nothing blocked).
        assert calls["call_soon_threadsafe"] == 0
        assert calls["add_writer"] == 0


async def test_a_write_that_blocks_finishes_through_a_writer(
    settings: bus.BrokerSettings, broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"{settings.prefix}/big"
    # 12 MiB in one packet: more than a socket holds, under the shipped 16 MiB packet limit.
    big = bytes(range(256)) * (12 * 4096)
    async with (
        bus.make_client(settings, "sub-big", persistent=False) as sub,
        bus.make_client(settings, "pub-big", persistent=False) as pub,
    ):
        await sub.subscribe(topic, qos=1)
        listening = asyncio.ensure_future(receive(sub, 2))
        calls = count_calls(monkeypatch, asyncio.get_running_loop(), ["add_writer"])
        # The broker stopped reading: the socket fills and the write has to wait for it.
        assert broker.process is not None
        broker.process.send_signal(signal.SIGSTOP)
        try:
            sending = asyncio.ensure_future(pub.publish(topic, big, qos=1))
            await asyncio.sleep(0.5)
            assert calls["add_writer"] >= 1 and not sending.done()
        finally:
            broker.process.send_signal(signal.SIGCONT)
        await sending
        await pub.publish(topic, b"after", qos=1)
        assert await listening == [big, b"after"]
