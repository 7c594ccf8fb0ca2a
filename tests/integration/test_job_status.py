"""The retained job status follows the round: it shows ``training`` while tasks are out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from coordinator.service import CoordinatorService
from fedbus.protocol import bus
from fedbus.protocol.messages import JobStatus, decode_json
from fedbus.protocol.topics import Topics

from .conftest import job_config, running_agents


async def test_the_job_status_shows_each_phase_of_a_round(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: a watcher of the job's status, subscribed before the job starts.
    seen: list[JobStatus] = []
    watcher = bus.make_client(settings, f"status-{time.monotonic_ns()}", persistent=False)

    async def watch() -> None:
        async for message in watcher.messages:
            assert isinstance(message.payload, bytes)
            seen.append(decode_json(JobStatus, message.payload))

    service = CoordinatorService(settings, runs_dir=tmp_path)
    service.submit(job_config(rounds=2, num_participants=3, min_agents=3))
    # Execute
    async with watcher, running_agents(settings, 3):
        await watcher.subscribe(Topics(settings.prefix).job_status("itest"), qos=1)
        reading = asyncio.create_task(watch())
        try:
            async with asyncio.timeout(90):
                results = await service.serve(exit_when_idle=True)
                while not seen or seen[-1].state != "finished":
                    await asyncio.sleep(0.02)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
    # Assert: training shown in each round, then the end.
    assert results == {"itest": True}
    # (A status may come twice: the service republishes it when its connection is up.)
    training = sorted({s.round for s in seen if s.phase == "training"})
    assert training == [0, 1], [(s.phase, s.round, s.state) for s in seen]
    assert seen[0].phase == "waiting_for_agents" and seen[-1].phase == "finished"
