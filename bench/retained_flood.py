"""Issue #16 finding 5: an agent filling the broker's retained store, before and after.

An agent with valid credentials publishes ``--count`` messages of ``--mb`` MiB with the
retain flag on update topics of jobs that do not exist (``fedbus/jobs/junk<i>/updates/evil``,
which the ACL lets it write). Prints the broker's RSS before and after, twice:

- **before**: the config as it was (256 MiB message limit) and no coordinator: every
  message stays retained (and would be persisted and replayed into every restart);
- **after**: the shipped config (16 MiB message limit) with a coordinator running, which
  deletes whatever agents retain on update and result topics.

    python bench/retained_flood.py [--count 21] [--mb 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import psutil

from coordinator.broker_process import BrokerProcess
from coordinator.credentials import add_user
from coordinator.service import CoordinatorService
from fedbus.protocol import bus
from fedbus.protocol.topics import Topics

OLD_LIMITS = "max_packet_size 268435455\nmessage_size_limit 268435455\n"
topics = Topics("fedbus")


def rss_mib(broker: BrokerProcess) -> float:
    assert broker.process is not None
    return psutil.Process(broker.process.pid).memory_info().rss / 2**20


async def retained_count(broker: BrokerProcess, expected: int, seconds: float = 20.0) -> int:
    """How many messages are retained under fedbus/jobs/+/updates/+ now."""
    settings = bus.BrokerSettings(port=broker.port, username="coordinator", password="c")
    seen = 0
    async with bus.make_client(settings, "counter", persistent=False) as client:
        await client.subscribe(topics.all_job_updates(), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for message in client.messages:
                    if message.retain and message.payload:
                        seen += 1
                        if seen == expected:
                            break
    return seen


async def flood(broker: BrokerProcess, count: int, size: int) -> str:
    """'' when every message was sent; else why the broker stopped the sender."""
    settings = bus.BrokerSettings(port=broker.port, username="evil", password="e")
    try:
        async with bus.make_client(settings, "evil", persistent=False) as evil:
            for i in range(count):
                topic = topics.job_update(f"junk{i}", "evil")
                await evil.publish(topic, bytes(size), qos=1, retain=True, timeout=20)
    except bus.MqttError as exc:
        return f"; the broker cut the sender off ({exc})"
    return ""


async def scenario(work: Path, *, after: bool, count: int, size: int) -> None:
    work.mkdir(parents=True)
    passwd = work / "passwd"
    add_user(passwd, "evil", "e")
    add_user(passwd, "coordinator", "c")
    broker = BrokerProcess.create(
        work / "broker",
        password_file=passwd,
        anonymous_loopback=False,
        extra_conf="" if after else OLD_LIMITS,
    )
    broker.start()
    serving = None
    try:
        if after:
            coordinator = bus.BrokerSettings(port=broker.port, username="coordinator", password="c")
            service = CoordinatorService(coordinator, runs_dir=work / "runs")
            serving = asyncio.create_task(service.serve())
            async with asyncio.timeout(30):
                await service.connected.wait()
        await asyncio.sleep(1.0)
        before = rss_mib(broker)
        began = time.monotonic()
        refused = await flood(broker, count, size)
        await asyncio.sleep(2.0)  # the coordinator's deletions, the broker's frees
        peak_after = rss_mib(broker)
        if serving is not None:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
        left = await retained_count(broker, count)
        name = (
            "after (shipped config + coordinator)"
            if after
            else "before (256 MiB limit, no coordinator)"
        )
        print(
            f"{name}: broker RSS {before:.0f} -> {peak_after:.0f} MiB; "
            f"{left} of {count} x {size / 2**20:.0f} MiB still retained "
            f"({time.monotonic() - began:.1f} s){refused}",
            flush=True,
        )
    finally:
        broker.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=21)
    parser.add_argument("--mb", type=float, default=15.0)
    args = parser.parse_args()
    size = int(args.mb * 2**20)
    with tempfile.TemporaryDirectory() as tmp:
        await scenario(Path(tmp) / "before", after=False, count=args.count, size=size)
        await scenario(Path(tmp) / "after", after=True, count=args.count, size=size)
        # The finding's 30 MiB messages: refused by the shipped message_size_limit.
        await scenario(Path(tmp) / "after30", after=True, count=3, size=30 * 2**20)


if __name__ == "__main__":
    asyncio.run(main())
