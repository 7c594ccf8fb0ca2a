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


def job_file(tmp_path: Path, name: str, **overrides: object) -> Path:
    path = tmp_path / f"{name}.yaml"
    config = job_config(name=name, rounds=1, **overrides)
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
    assert "not submitted" in done.stdout and "no `coordinator serve`" in done.stdout
    assert f"{settings.host}:{settings.port}" in done.stdout


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
            assert "submitted job handed-over: JOB_BEGIN" in done.stdout
            async with asyncio.timeout(20):
                while "handed-over" not in service.runners:
                    await asyncio.sleep(0.05)
        else:
            assert done.returncode == 2
            assert "not submitted" in done.stdout
            assert "handed-over" not in service.runners
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_refused_submission_exits_non_zero_with_the_coordinators_reason(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: a serving coordinator already running job "twice" with 1 round.
    service = CoordinatorService(settings, runs_dir=tmp_path / "runs")
    task = asyncio.create_task(service.serve())
    try:
        async with asyncio.timeout(20):
            await service.connected.wait()
        first = await asyncio.to_thread(submit, job_file(tmp_path, "twice"), settings)
        assert first.returncode == 0, first.stdout + first.stderr
        # Execute: the same name again, with other hyper-parameters.
        (tmp_path / "b").mkdir()
        changed = job_file(tmp_path / "b", "twice", learning_rate=0.5)
        done = await asyncio.to_thread(submit, changed, settings)
        # Assert: refused with the reason, and the running job is untouched.
        assert done.returncode == 1, done.stdout + done.stderr
        assert "refused" in done.stdout and "already running" in done.stdout
        assert service.runners["twice"].config.learning_rate != 0.5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_job_naming_a_missing_model_is_refused_before_sending(
    broker: BrokerProcess, settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nmodel: fedbus.examples.nosuch:make_model\n"
        "data: fedbus.examples.digits:load_partition\n"
    )
    done = submit(path, settings)
    assert done.returncode == 2
    assert "field model" in done.stdout and "nosuch" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
