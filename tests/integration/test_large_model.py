"""A 100 MB model through a broker that refuses packets over 8 MB: chunks carry it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np

from coordinator import checkpoint
from coordinator.broker_process import BrokerProcess
from coordinator.events import read_events
from coordinator.service import CoordinatorService
from fedbus.protocol import bus

from .conftest import SPEEDUPS, job_config, running_agents

EIGHT_MB = 8 * 1024 * 1024


async def delivered(settings: bus.BrokerSettings, size: int) -> bool:
    """Whether one message of ``size`` bytes gets through the broker."""
    topic = f"{settings.prefix}/probe/{size}"
    async with bus.make_client(settings, f"probe-sub-{size}", persistent=False) as sub:
        await sub.subscribe(topic, qos=1)
        try:
            async with bus.make_client(settings, f"probe-pub-{size}", persistent=False) as pub:
                await asyncio.wait_for(pub.publish(topic, bytes(size), qos=1), 5)
        except (bus.MqttError, TimeoutError):
            return False  # the broker closed the connection on the oversized packet
        try:
            async with asyncio.timeout(3):
                async for message in sub.messages:
                    return len(message.payload) == size  # type: ignore[arg-type]
        except TimeoutError:
            return False
    return False


async def test_hundred_megabyte_model_over_eight_megabyte_packets(tmp_path: Path) -> None:
    broker = BrokerProcess.create(tmp_path / "broker", extra_conf=f"max_packet_size {EIGHT_MB}\n")
    broker.start()
    try:
        settings = bus.BrokerSettings(
            port=broker.port,
            prefix=f"t{uuid.uuid4().hex[:8]}",
            chunk_size=4 * 1024 * 1024,
            speedups=SPEEDUPS,
        )
        config = job_config(
            name="big",
            model="tests.integration.big_model:make_model",
            data_args={"num_partitions": 2, "alpha": None, "seed": 0},
            rounds=1,
            num_participants=2,
            min_agents=2,
            local_steps=1,
            batch_size=8,
            learning_rate=0.01,
            momentum=0.0,
            eval_interval=1,
            round_timeout=120,
            eval_timeout=60,
            max_update_bytes=200 * 1024 * 1024,
        )
        service = CoordinatorService(settings, runs_dir=tmp_path)
        service.submit(config)
        async with running_agents(settings, 2):
            async with asyncio.timeout(240):
                assert await service.serve(exit_when_idle=True) == {"big": True}
        events = read_events(tmp_path / "big" / "events.jsonl")
        begin = next(e for e in events if e["event"] == "JOB_BEGIN")
        assert begin["data"]["num_params"] == 25_000_060
        end = next(e for e in events if e["event"] == "ROUND_END")
        assert sorted(end["data"]["kept"]) == ["agent-0", "agent-1"]
        assert all(size > 100_000_000 for size in end["data"]["update_bytes"].values())
        assert end["data"]["accuracy"] is not None
        state, tensors = checkpoint.load(tmp_path / "big" / "checkpoint")  # type: ignore[misc]
        assert state["model_version"] == 1
        assert sum(t.size for t in tensors.values()) == 25_000_060
        assert all(np.isfinite(t).all() for t in tensors.values())
        # Control: the broker really refuses a single message over 8 MB.
        assert not await delivered(settings, 9 * 1024 * 1024)
        assert await delivered(settings, 4 * 1024 * 1024)
    finally:
        broker.stop()
