"""`coordinator submit` on a real broker: only to a `coordinator serve`, never into the void."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coordinator.broker_process import BrokerProcess
from coordinator.service import CoordinatorService
from fedbus.protocol import bus

from .conftest import REPO, job_config


def job_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    config = job_config(name=name, rounds=1)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    return path


def submit(path: Path, settings: bus.BrokerSettings) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "coordinator.cli", "submit", str(path)]
    argv += ["--broker", f"{settings.host}:{settings.port}", "--prefix", settings.prefix]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_a_submission_with_no_serving_coordinator_is_refused_with_the_reason(
    broker: BrokerProcess, settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    done = submit(job_file(tmp_path, "nobody-home"), settings)
    assert done.returncode == 2
    assert "not submitted" in done.stdout and "coordinator status: none" in done.stdout


@pytest.mark.parametrize("serving", [True, False])
async def test_a_submission_goes_only_to_a_coordinator_that_takes_jobs(
    settings: bus.BrokerSettings, tmp_path: Path, serving: bool
) -> None:
    # Prepare: a coordinator online, taking submissions (`serve`) or not (as `run` does).
    service = CoordinatorService(settings, runs_dir=tmp_path / "runs", accept_submissions=serving)
    task = asyncio.create_task(service.serve())
    try:
        async with asyncio.timeout(20):
            await service.connected.wait()
        # Execute
        done = await asyncio.to_thread(submit, job_file(tmp_path, "handed-over"), settings)
        # Assert: `serve` got the job; a one-job coordinator's status refuses the submit.
        if serving:
            assert done.returncode == 0, done.stdout + done.stderr
            assert "submitted job handed-over" in done.stdout
            async with asyncio.timeout(20):
                while "handed-over" not in service.runners:
                    await asyncio.sleep(0.05)
        else:
            assert done.returncode == 2
            assert "one-job `coordinator run` (online)" in done.stdout
            assert "handed-over" not in service.runners
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
