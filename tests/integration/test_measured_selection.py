"""Oort on the wall clock with real agents: its preferred duration comes from measurements."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from coordinator.events import read_events
from coordinator.service import CoordinatorService
from edge_agent.agent import AgentIdentity, EdgeAgent
from edge_agent.model_store import ModelStore
from edge_agent.trainer import LocalTrainer
from fedbus.protocol import bus
from fedbus.protocol.messages import AgentProfile, TrainConfig

from .conftest import job_config

SLOWDOWNS = [1.0, 2.0, 4.0, 8.0]
LOCAL_STEPS = 10


@contextlib.asynccontextmanager
async def measured_agents(
    settings: bus.BrokerSettings, config: TrainConfig
) -> AsyncIterator[dict[str, float]]:
    """Agents whose profiles carry their step time on the job's model, timed at start-up
    as ``edge-agent run --model --data`` does; yields those step times by agent."""
    agents, steps = [], {}
    for i, slowdown in enumerate(SLOWDOWNS):
        trainer = LocalTrainer("cpu", slowdown=slowdown)
        step = trainer.measure_step_seconds(config, i)
        steps[f"agent-{i}"] = step
        profile = AgentProfile(partition=i, static={"step_time_s": step})
        agents.append(
            EdgeAgent(AgentIdentity(f"agent-{i}", i, profile), settings, trainer, ModelStore())
        )
    tasks = [asyncio.create_task(a.run()) for a in agents]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(a.connected.wait() for a in agents))
        yield steps
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_oort_prefers_a_duration_measured_by_the_agents(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    config = job_config(
        name="oortwall",
        data_args={"num_partitions": 4, "alpha": 0.5, "seed": 0},
        rounds=2,
        num_participants=2,
        overcommitment=1.0,
        clients_required=2,
        local_steps=LOCAL_STEPS,
        eval_interval=0,
        # FedScale's percentile (the default is [O]'s 10: the shortest of four here)
        selector={"name": "oort", "seed": 3, "round_threshold": 30.0},
    )
    train_config = TrainConfig(model=config.model, data=config.data, data_args=config.data_args)
    async with measured_agents(settings, train_config) as steps:
        service = CoordinatorService(settings, runs_dir=tmp_path)
        service.submit(config)
        async with asyncio.timeout(120):
            assert await service.serve(exit_when_idle=True) == {"oortwall": True}
    events = read_events(tmp_path / "oortwall" / "events.jsonl")
    begins = {e["round"]: e["data"] for e in events if e["event"] == "ROUND_BEGIN"}
    ends = {e["round"]: e["data"] for e in events if e["event"] == "ROUND_END"}
    # Registered with E x measured step time each; Oort's T is the 30th percentile, the
    # second shortest of four, instead of the 1 s default every agent shared before.
    estimates = {a: LOCAL_STEPS * s for a, s in steps.items()}
    assert begins[1]["selector"]["preferred_duration"] == sorted(estimates.values())[1]
    # Round 1's participants then report their measured round times (the agents' own
    # t_dl + t_comp + t_ul), which replace their estimates in round 2's choice of T.
    known = {**estimates, **ends[1]["durations"]}
    assert set(ends[1]["durations"]) == set(ends[1]["kept"])
    assert begins[2]["selector"]["preferred_duration"] == sorted(known.values())[1]
