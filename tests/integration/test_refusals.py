"""No wait on a reply that cannot come: an agent that cannot do a task says so.

A straggler still training round r when round r + 1 has closed finds, on its next task
(round r + 1, carrying round r's validation as ``validate_first``), that the model moved
on. It refuses the training with ``model_moved_on``, and answers the validation on the
model it still holds from before (the one the current model replaced); the coordinator
never waits for ``eval_timeout``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from coordinator.events import read_events
from coordinator.service import CoordinatorService
from edge_agent.agent import AgentIdentity, UpdatePlan
from edge_agent.model_store import GlobalModel, ModelStore
from fedbus.protocol import bus
from fedbus.protocol.messages import Task

from .conftest import job_config, running_agents

ROUNDS = 5
STRAGGLING_ROUNDS = (1, 3)


def straggling(train: Any, models: ModelStore) -> Any:
    """``train``, but in STRAGGLING_ROUNDS it first waits until two newer models are out."""

    def slow(task: Task, model: GlobalModel, identity: AgentIdentity) -> UpdatePlan:
        if task.round in STRAGGLING_ROUNDS:
            give_up = time.monotonic() + 60.0
            while time.monotonic() < give_up:  # a worker thread: the loop runs on meanwhile
                latest = models.latest(task.job)
                if latest is not None and latest.version >= task.model_version + 2:
                    break
                time.sleep(0.01)
        return train(task, model, identity)

    return slow


async def test_a_straggler_refuses_a_task_whose_model_moved_on_and_nobody_waits(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: 4 agents asked, 3 kept; validation every round, overlapped with the next
    # round's training. An eval_timeout far beyond the test's own timeout: a validation
    # that waited for the straggler's refused reply would fail the test.
    config = job_config(
        rounds=ROUNDS,
        num_participants=3,
        overcommitment=1.34,
        eval_interval=1,
        eval_timeout=600,
        round_timeout=600,
    )
    service = CoordinatorService(settings, runs_dir=tmp_path)
    service.submit(config)
    # Execute
    async with running_agents(settings, 3), running_agents(settings, 1, first=3) as slow:
        # Its own process-wide compute lock (as on a device of its own): held while it
        # straggles, it does not hold up the other three.
        straggler = slow[0]
        straggler.train_fn = straggling(straggler.train_fn, straggler.models)
        async with asyncio.timeout(120):
            results = await service.serve(exit_when_idle=True)
    # Assert: every round ended; the straggler's training was refused, but the validation
    # folded in that task still ran, on the model it had just replaced: nothing was lost.
    assert results == {"itest": True}
    events = read_events(tmp_path / "itest" / "events.jsonl")
    ends = {e["round"]: e["data"] for e in events if e["event"] == "ROUND_END"}
    assert sorted(ends) == list(range(1, ROUNDS + 1))
    for round_ in STRAGGLING_ROUNDS:
        assert straggler.agent_id not in ends[round_]["kept"]
        assert straggler.agent_id not in ends[round_ + 1]["kept"]  # round r + 1: refused
        assert ends[round_]["eval_agents"] == 4
