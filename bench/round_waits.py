"""Waits on replies that cannot come: a straggler per round, and two jobs on one pool.

1. **Straggler.** 4 agents, 4 asked and 3 kept per round, validation every round
   overlapped with the next round's training. One agent straggles: in every other round
   it is still training when the next round has closed, so its next task (which carries
   the previous round's validation) is for a model that moved on. Printed: the median time
   from one ROUND_BEGIN to the next, with and without the straggler, and their ratio
   (issue #15: within 2x; before the refusals, a straggled round waited eval_timeout).
2. **Two concurrent jobs** on one pool of 3 agents (3 asked, 2 kept, validation every
   round): a validation task of one job can queue behind the other job's training until
   its model moved on. Printed: validation replies expected and lost over ``--pairs``
   pairs of jobs (issue #15: none lost in 20 pairs).

    python bench/round_waits.py [--rounds 6] [--pairs 20] [--local-steps 5]

Agents run in this process (real MQTT connections to a real mosquitto, real training on
digits), each with its own compute lock, as on devices of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from coordinator.broker_process import BrokerProcess
from coordinator.config import JobConfig, parse_job
from coordinator.events import read_events
from coordinator.service import CoordinatorService
from edge_agent.agent import AgentIdentity, EdgeAgent, UpdatePlan
from edge_agent.model_store import GlobalModel, ModelStore
from edge_agent.trainer import LocalTrainer
from fedbus.protocol import bus
from fedbus.protocol.messages import AgentProfile, Task

TrainWrap = Callable[[EdgeAgent], None]


def job(name: str, args: argparse.Namespace, **overrides: Any) -> JobConfig:
    base: dict[str, Any] = {
        "name": name,
        "model": "fedbus.examples.digits:make_model",
        "data": "fedbus.examples.digits:load_partition",
        "data_args": {"num_partitions": 4, "alpha": 0.5, "seed": 0},
        "rounds": args.rounds,
        "clients_required": 1,
        "agent_wait_timeout": 60,
        "round_timeout": 120,
        "eval_timeout": args.eval_timeout,
        "local_steps": args.local_steps,
        "batch_size": 16,
        "eval_interval": 1,
    }
    return parse_job({**base, **overrides}, "<bench>")


@contextlib.asynccontextmanager
async def agents_on(settings: bus.BrokerSettings, count: int) -> AsyncIterator[list[EdgeAgent]]:
    agents = [
        EdgeAgent(
            AgentIdentity(f"agent-{i}", i, AgentProfile(partition=i)),
            settings,
            LocalTrainer("cpu"),  # its own: agents train concurrently, like devices
            ModelStore(),
            compute_lock=asyncio.Lock(),
        )
        for i in range(count)
    ]
    tasks = [asyncio.create_task(a.run(), name=a.agent_id) for a in agents]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(a.connected.wait() for a in agents))
        yield agents
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def straggler(rounds: int) -> TrainWrap:
    """In odd rounds but the last, the agent is still training when the next round closes."""

    def wrap(agent: EdgeAgent) -> None:
        straggle(agent, rounds)

    return wrap


def straggle(agent: EdgeAgent, rounds: int) -> None:
    train, models = agent.train_fn, agent.models

    def slow(task: Task, model: GlobalModel, identity: AgentIdentity) -> UpdatePlan:
        if task.round % 2 == 1 and task.round < rounds:
            give_up = time.monotonic() + 120.0
            while time.monotonic() < give_up:  # until the next round has closed
                latest = models.latest(task.job)
                if latest is not None and latest.version >= task.model_version + 2:
                    break
                time.sleep(0.005)
        return train(task, model, identity)

    agent.train_fn = slow


async def run_jobs(
    runs: Path, configs: list[JobConfig], agents: int, wrap: TrainWrap | None
) -> list[list[dict[str, Any]]]:
    """The jobs, run to their end on a fresh broker with ``agents`` agents."""
    broker = BrokerProcess.create(runs / "broker")
    broker.start()
    try:
        settings = bus.BrokerSettings(port=broker.port, prefix=f"b{uuid.uuid4().hex[:8]}")
        service = CoordinatorService(settings, runs_dir=runs)
        for config in configs:
            service.submit(config)
        async with agents_on(settings, agents) as pool:
            if wrap is not None:
                wrap(pool[-1])
            results = await service.serve(exit_when_idle=True)
    finally:
        broker.stop()
    assert all(results.values()), results
    return [read_events(runs / c.name / "events.jsonl") for c in configs]


def round_gaps(events: list[dict[str, Any]]) -> list[float]:
    begins = [e["ts"] for e in events if e["event"] == "ROUND_BEGIN"]
    return [b - a for a, b in itertools.pairwise(begins)]


def lost_validations(events: list[dict[str, Any]], asked: int) -> tuple[int, int]:
    ends = [e["data"] for e in events if e["event"] == "ROUND_END"]
    return asked * len(ends), sum(asked - e.get("eval_agents", 0) for e in ends)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="round-waits-") as tmp:
        work = Path(tmp)
        over = {"num_participants": 3, "overcommitment": 1.34, "min_agents": 4}
        print(f"straggler: {args.rounds} rounds, 4 agents (4 asked, 3 kept), overlapped validation")
        (plain,) = await run_jobs(work / "plain", [job("plain", args, **over)], 4, None)
        wrap = straggler(args.rounds)
        (slow,) = await run_jobs(work / "slow", [job("slow", args, **over)], 4, wrap)
        for name, events in (("without a straggler", plain), ("with a straggler   ", slow)):
            gaps = round_gaps(events)
            print(
                f"  round time {name}: mean {statistics.mean(gaps):.3f} s, "
                f"median {statistics.median(gaps):.3f} s, max {max(gaps):.3f} s"
            )
        ratio = statistics.mean(round_gaps(slow)) / statistics.mean(round_gaps(plain))
        print(f"  ratio of means: {ratio:.2f}x (eval_timeout {args.eval_timeout} s)")
        pair = {"num_participants": 2, "overcommitment": 1.5, "min_agents": 3}
        expected = lost = 0
        for index in range(args.pairs):
            configs = [job(f"p{index}-{side}", args, **pair) for side in "ab"]
            for events in await run_jobs(work / f"pair{index}", configs, 3, None):
                asked, missing = lost_validations(events, 3)
                expected, lost = expected + asked, lost + missing
        print(f"two concurrent jobs on 3 agents, {args.pairs} pairs x {args.rounds} rounds:")
        print(f"  validation replies expected {expected}, lost {lost}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--eval-timeout", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
