"""Robust aggregation over a real broker: scaled-up poisoned updates from 20 % of the agents.

Four jobs run side by side on the same ten agents (digits, IID partitions): a clean
FedAvg job, and FedAvg, coordinate median and trimmed mean (trim_frac 0.2) with two of
the ten agents sending their honest delta multiplied by -10. The robust rules stay
within 5 accuracy points of the clean job; FedAvg, which lets one scaled update outweigh
the others, does not.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from coordinator.events import read_events
from coordinator.service import CoordinatorService
from edge_agent.agent import AgentIdentity, EdgeAgent, UpdatePlan
from fedbus.protocol import bus
from fedbus.protocol.messages import Task

from .conftest import job_config, running_agents

AGENTS = 10
POISONED = (3, 7)  # 20 %
SCALE = -10.0
AGGREGATORS: dict[str, dict[str, Any]] = {
    "clean": {"name": "fedavg"},
    "fedavg": {"name": "fedavg"},
    "median": {"name": "median"},
    "trimmed": {"name": "trimmed_mean", "trim_frac": 0.2},
}


def poisoning(agent: EdgeAgent) -> None:
    """Scale this agent's honest delta in every job but the clean one."""
    honest = agent.train_fn

    def poisoned(task: Task, model: Any, identity: AgentIdentity) -> UpdatePlan:
        plan = honest(task, model, identity)
        if task.job != "clean":
            plan.outcome.delta *= SCALE
        return plan

    agent.train_fn = poisoned


async def test_median_and_trimmed_mean_resist_scaled_poisoned_updates(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare
    rounds = 5
    service = CoordinatorService(settings, runs_dir=tmp_path)
    for name, aggregator in AGGREGATORS.items():
        service.submit(
            job_config(
                name=name,
                data_args={"num_partitions": AGENTS, "alpha": None, "seed": 0},
                rounds=rounds,
                num_participants=AGENTS,  # every agent, every round: 2 of 10 poisoned
                overcommitment=1.0,
                min_agents=AGENTS,
                clients_required=AGENTS,
                round_timeout=60,
                eval_interval=rounds,
                aggregator=aggregator,
                seed=1,
            )
        )
    # Execute
    async with running_agents(settings, AGENTS) as agents:
        for index in POISONED:
            poisoning(agents[index])
        async with asyncio.timeout(120):
            results = await service.serve(exit_when_idle=True)
    # Assert
    assert results == dict.fromkeys(AGGREGATORS, True)
    accuracy = {}
    for name in AGGREGATORS:
        events = read_events(tmp_path / name / "events.jsonl")
        ends = [e for e in events if e["event"] == "ROUND_END"]
        assert [e["round"] for e in ends] == list(range(1, rounds + 1))
        assert all(len(e["data"]["kept"]) == AGENTS for e in ends)
        accuracy[name] = ends[-1]["data"]["accuracy"]
    print(f"\nfinal test accuracy after {rounds} rounds, 2 of 10 agents x{SCALE:g}: {accuracy}")
    assert accuracy["clean"] > 0.8  # the clean job learned
    assert accuracy["median"] >= accuracy["clean"] - 0.05
    assert accuracy["trimmed"] >= accuracy["clean"] - 0.05
    assert accuracy["fedavg"] < accuracy["clean"] - 0.05
