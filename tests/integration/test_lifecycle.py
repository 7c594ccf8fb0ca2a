"""A job's final state on every exit path of `coordinator serve`."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from coordinator.service import CoordinatorService
from fedbus.protocol import bus
from fedbus.protocol.messages import CoordinatorStatus, JobStatus, decode_json
from fedbus.protocol.topics import Topics

from .conftest import job_config


async def retained(settings: bus.BrokerSettings, topic: str) -> bytes:
    """The retained message on ``topic``, read by a client of another process (mosquitto_sub)."""
    done = await asyncio.to_thread(
        subprocess.run,
        ["mosquitto_sub", "-p", str(settings.port), "-t", topic, "-C", "1", "-W", "10"],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, f"nothing retained on {topic}: {done.stderr!r}"
    return done.stdout.rstrip(b"\n")


async def test_a_clean_shutdown_marks_running_jobs_stopped(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: a job that waits for agents that never come.
    topics = Topics(settings.prefix)
    service = CoordinatorService(settings, runs_dir=tmp_path, coordinator_id="c1")
    service.submit(job_config(name="waiting", agent_wait_timeout=300))
    began = asyncio.Event()
    service.on_runner = lambda runner: runner.events.listeners.append(
        lambda e: began.set() if e.event == "JOB_BEGIN" else None
    )
    serving = asyncio.create_task(service.serve())
    async with asyncio.timeout(60):
        await began.wait()
    # The job is running as far as anyone can see (its retained status says so): the
    # shutdown below must leave "stopped", not a "running" published after it.
    while (
        decode_json(JobStatus, await retained(settings, topics.job_status("waiting"))).state
        != "running"
    ):
        await asyncio.sleep(0.05)
    # Execute: what Ctrl-C does to asyncio.run's main task.
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    # Assert: the job says it was stopped, and by whom; the coordinator is offline.
    job = decode_json(JobStatus, await retained(settings, topics.job_status("waiting")))
    assert (job.state, job.coordinator, job.reason) == ("stopped", "c1", "coordinator shut down")
    status = await retained(settings, topics.coordinator_status("c1"))
    coordinator = decode_json(CoordinatorStatus, status)
    assert coordinator.state == "offline" and coordinator.orphaned == []


def test_the_last_will_names_the_jobs_it_would_orphan(tmp_path: Path) -> None:
    service = CoordinatorService(bus.BrokerSettings(), runs_dir=tmp_path, coordinator_id="c1")
    service.runners["j1"] = object()  # type: ignore[assignment]
    will = decode_json(CoordinatorStatus, service._status("offline", orphaned=True))
    assert will.state == "offline" and will.orphaned == ["j1"] and will.jobs == ["j1"]
