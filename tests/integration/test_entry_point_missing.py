"""An agent without the job's code says so, and the coordinator shows it and moves on.

The user story of issue #18: a job whose data module the agents lack used to fail every
round with "0 of 1 required replies" and no word of the agents' EntryPointError.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coordinator.cli import print_round
from coordinator.events import read_events
from coordinator.service import CoordinatorService
from edge_agent.trainer import LocalTrainer
from fedbus.protocol import bus
from fedbus.protocol.entry_points import DEFAULT_TRUSTED

from .conftest import job_config, running_agents


async def test_missing_entry_point_is_reported_and_agent_not_picked_again(
    settings: bus.BrokerSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the coordinator can build the model; no agent has the data module.
    config = job_config(
        name="missing", data="nobody_has_this_module:load", rounds=3, num_participants=4
    )
    service = CoordinatorService(
        settings,
        runs_dir=tmp_path,
        on_runner=lambda runner: runner.events.listeners.append(print_round),
    )
    service.submit(config)

    # Execute
    # The agents trust the module's name (their --trust): what they lack is the module.
    trusting = LocalTrainer("cpu", trusted=(*DEFAULT_TRUSTED, "nobody_has_this_module"))
    async with running_agents(settings, 4, trainer=trusting), asyncio.timeout(120):
        await service.serve(exit_when_idle=True)

    # Assert: round 1 names the agents' own error; later rounds dispatch nobody.
    events = read_events(tmp_path / "missing" / "events.jsonl")
    rounds = [e["data"] for e in events if e["event"] in ("ROUND_END", "ROUND_FAILED")]
    first = rounds[0]
    assert sorted(first["excluded"]) == sorted(first["selected"])
    reason = next(iter(first["excluded"].values()))
    assert reason.startswith("EntryPointError:") and "nobody_has_this_module" in reason
    assert all(r["selected"] == [] for r in rounds[1:])
    later = rounds[1]["reason"]
    assert "cannot run this job" in later
    out = capsys.readouterr().out
    assert "cannot run this job" in out and "nobody_has_this_module" in out
