"""`coordinator watch` in a real pseudo-terminal (tmux), and `coordinator jobs` from a shell.

A service runs a long job and a job no agent can run, on a real broker with real agents;
`coordinator watch` runs in a detached tmux pane whose screen the test reads back.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from coordinator.service import CoordinatorService
from fedbus.protocol import bus

from .conftest import REPO, job_config
from .test_scheduling import tagged_agents

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for a pty")


def cli(settings: bus.BrokerSettings, *argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "coordinator.cli", *argv]
    command += ["--broker", f"{settings.host}:{settings.port}", "--prefix", settings.prefix]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def screen_line(screen: str, word: str) -> str:
    return next((line for line in screen.splitlines() if word in line), "")


async def test_watch_shows_running_jobs_and_agents_and_jobs_commands_work(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: a job too long to end during the test on three agents, and a job waiting
    # for a GPU nobody has.
    five = {"data_args": {"num_partitions": 3, "alpha": 0.5, "seed": 0}}
    service = CoordinatorService(settings, runs_dir=tmp_path, policy="srsf")
    service.submit(
        job_config(**five, name="watched", rounds=100_000, num_participants=2, min_agents=2)
    )
    service.submit(
        job_config(name="gpu-job", rounds=1, min_agents=1, requires={"accelerator": "cuda"})
    )
    tmux = ["tmux", "-L", f"fedbus-{uuid.uuid4().hex[:8]}"]
    watch = [sys.executable, "-m", "coordinator.cli", "watch"]
    watch += ["--broker", f"{settings.host}:{settings.port}", "--prefix", settings.prefix]
    async with tagged_agents(settings, 3):
        serving = asyncio.create_task(service.serve(exit_when_idle=True))
        try:
            subprocess.run(
                [*tmux, "new-session", "-d", "-s", "w", "-x", "200", "-y", "70", "-c", str(REPO),
                 " ".join(watch)],
                check=True,
            )  # fmt: skip
            # Execute: read the pane until it shows the job running and every agent.
            screen = ""
            async with asyncio.timeout(120):
                while not (
                    "running" in screen_line(screen, "watched")
                    and "waiting" in screen_line(screen, "gpu-job")
                    and all("online" in screen_line(screen, f"agent-{i}") for i in range(3))
                    and "watched" in screen_line(screen, "agent-")  # someone busy for it
                ):
                    await asyncio.sleep(0.3)
                    screen = subprocess.run(
                        [*tmux, "capture-pane", "-p", "-t", "w"], capture_output=True, text=True
                    ).stdout
            listing = await asyncio.to_thread(cli, settings, "jobs", "list")
            status = await asyncio.to_thread(cli, settings, "jobs", "status", "gpu-job")
            logs = await asyncio.to_thread(cli, settings, "jobs", "logs", "watched", "--tail", "4")
            cancel = await asyncio.to_thread(cli, settings, "jobs", "cancel", "watched")
            again = await asyncio.to_thread(cli, settings, "jobs", "cancel", "watched")
            await asyncio.to_thread(cli, settings, "jobs", "cancel", "gpu-job")
            async with asyncio.timeout(60):
                results = await serving
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True)
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
    # Assert: the screen, and what the commands printed.
    assert "policy srsf" in screen
    assert "gpu-job waits: requirements (accelerator in ['cuda']) met by 0 of 3" in screen
    assert listing.returncode == 0 and "watched" in listing.stdout and "gpu-job" in listing.stdout
    assert "waiting for: requirements (accelerator in ['cuda'])" in status.stdout
    assert logs.returncode == 0 and len(logs.stdout.splitlines()) == 4
    assert "ROUND_END      kept 2/2" in logs.stdout
    assert cancel.returncode == 0 and "job watched cancelled" in cancel.stdout
    assert again.returncode == 1 and "job watched is not running" in again.stdout
    assert results == {"watched": False, "gpu-job": False}


async def test_jobs_logs_follow_prints_events_until_the_job_ends(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: a three-round job. Whenever `logs -f` gets going, nothing is lost: it
    # subscribes to the events before it asks for the log's tail.
    three = {"data_args": {"num_partitions": 3, "alpha": 0.5, "seed": 0}}
    service = CoordinatorService(settings, runs_dir=tmp_path)
    service.submit(job_config(**three, name="followed", rounds=3, num_participants=3, min_agents=3))
    serving = asyncio.create_task(service.serve())  # it stays to answer after the job
    try:
        async with asyncio.timeout(30):
            await service.connected.wait()
        # Execute
        follow = asyncio.create_task(
            asyncio.to_thread(cli, settings, "jobs", "logs", "followed", "-f", "--tail", "100")
        )
        async with tagged_agents(settings, 3), asyncio.timeout(120):
            done = await follow
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    # Assert: every round once, and it stopped by itself at the job's end.
    assert service.results == {"followed": True}
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[2] for line in lines if "ROUND_END" in line] == ["1", "2", "3"]
    assert lines[-1].split()[3] == "JOB_END"
