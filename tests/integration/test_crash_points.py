"""The coordinator killed at each command boundary of a round, then restarted.

Write-ahead (a round's checkpoint is durable before its model or any task for it is
published) and the run epoch (a restarted or re-run coordinator's model is never taken for
an older run's retained one) make every instant a safe place to die: the job finishes,
every round ends exactly once, and the final model is bit-identical to an uninterrupted
run's. The agents are long-running across all those runs of the same job name, so each run
after the first is also a same-name re-run whose agents hold the previous run's newer model.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np
import yaml

from coordinator import cli, job_runner
from coordinator.events import read_events
from fedbus.protocol import bus

from .conftest import job_config, running_agents
from .test_faults import assert_rounds_once_each, final_model, forkserver_ready, reaped

JOB = "itest"
ROUNDS = 4
CRASH_ROUND = 2
CRASH_EXIT = 86  # what the hook exits with: told apart from any other way of dying

_FORK = multiprocessing.get_context("forkserver")


def _coordinator_process(argv: list[str], log: str, point: str | None) -> None:
    """Body of a forked coordinator; with ``point``, it dies there in round CRASH_ROUND."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    if point is not None:

        def crash(at: str, round_: int) -> None:
            if (at, round_) == (point, CRASH_ROUND):
                os._exit(CRASH_EXIT)  # no cleanup, no flush: as abrupt as SIGKILL

        job_runner.crash_hook = crash
    sys.exit(cli.main(argv))


async def run_coordinator(argv: list[str], log: Path, point: str | None) -> int:
    process: BaseProcess = _FORK.Process(
        target=_coordinator_process, args=(argv, str(log), point), daemon=True
    )
    with reaped({"coordinator": process}):
        process.start()
        async with asyncio.timeout(120):
            while process.is_alive():
                await asyncio.sleep(0.05)
    assert process.exitcode is not None
    return process.exitcode


async def test_a_coordinator_killed_at_each_crash_point_finishes_the_same_model(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: 3 agents, all kept every round (the aggregated set cannot depend on timing),
    # validation every other round, overlapped with the next round's training.
    config = job_config(
        rounds=ROUNDS, num_participants=3, overcommitment=1.0, min_agents=3, eval_interval=2
    )
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))

    def argv(runs: Path) -> list[str]:
        broker = ["--broker", f"{settings.host}:{settings.port}", "--prefix", settings.prefix]
        return ["run", str(job_file), "--runs-dir", str(runs), "--quiet", *broker]

    await forkserver_ready()
    exits: dict[str, tuple[int, int]] = {}
    async with running_agents(settings, 3):
        # Execute: an uninterrupted run, then per crash point a killed run and its restart.
        baseline = await run_coordinator(argv(tmp_path / "base"), tmp_path / "base.log", None)
        assert baseline == 0, (tmp_path / "base.log").read_text()
        for point in job_runner.CRASH_POINTS:
            runs, log = tmp_path / point, tmp_path / f"{point}.log"
            killed = await run_coordinator(argv(runs), log, point)
            restarted = await run_coordinator(argv(runs), log, None)
            exits[point] = (killed, restarted)

    # Assert: every run ended every round once, successfully, with the baseline's model.
    assert exits == dict.fromkeys(job_runner.CRASH_POINTS, (CRASH_EXIT, 0)), exits
    base_state, base_model = final_model(tmp_path / "base" / JOB)
    assert base_state["model_version"] == ROUNDS
    for point in job_runner.CRASH_POINTS:
        events = read_events(tmp_path / point / JOB / "events.jsonl")
        assert_rounds_once_each(events, ROUNDS)
        outcomes = [e for e in events if e["event"] in ("ROUND_END", "ROUND_FAILED")]
        assert all(e["data"]["ok"] for e in outcomes), (point, outcomes)
        assert [e["event"] for e in events].count("JOB_RESUMED") == 1, point
        state, model = final_model(tmp_path / point / JOB)
        assert state["completed_rounds"] == ROUNDS and state["model_version"] == ROUNDS, point
        assert model.keys() == base_model.keys()
        for name, tensor in model.items():
            assert np.array_equal(tensor, base_model[name]), (point, name)
