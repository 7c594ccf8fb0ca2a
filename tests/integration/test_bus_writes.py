"""A write that fills the socket finishes through the event loop's writer, on a real broker."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

import pytest

from coordinator.broker_process import BrokerProcess
from fedbus.protocol import bus

from .conftest import receive, wait_until


def count_calls(monkeypatch: pytest.MonkeyPatch, loop: Any, names: list[str]) -> Counter[str]:
    calls: Counter[str] = Counter()
    for name in names:
        original = getattr(loop, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(loop, name, counted)
    return calls


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
            await wait_until(lambda: calls["add_writer"] >= 1)
            assert not sending.done()
        finally:
            broker.process.send_signal(signal.SIGCONT)
        await sending
        await pub.publish(topic, b"after", qos=1)
        assert await listening == [big, b"after"]
