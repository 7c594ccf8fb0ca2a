"""Trust limits over a real broker: one agent of eight lies about everything (finding 6).

The liar sends Gaussian noise five times the scale of its honest update, claims
``num_examples = 10**9``, and answers every validation with accuracy 1.0 over 10**12
examples. Three jobs run side by side on the same eight agents (digits, IID): a clean one,
one with the default trust settings (FedAvg as published: the liar owns the model), and
one with the protective setting of docs/security.md. With it, the final model is within
0.02 of the clean job's accuracy, and the accuracy the job reports is within 0.02 of the
model's true accuracy on the held-out union of every partition's test split.
"""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coordinator import checkpoint
from coordinator.events import read_events
from coordinator.service import CoordinatorService
from edge_agent.agent import AgentIdentity, EdgeAgent, UpdatePlan
from edge_agent.torch_state import load_numpy_state
from edge_agent.trainer import LocalTrainer, evaluate_model
from fedbus.examples.digits import load_test, make_model
from fedbus.protocol import bus
from fedbus.protocol.entry_points import DEFAULT_TRUSTED
from fedbus.protocol.messages import Task

from .conftest import job_config, running_agents

AGENTS = 8
ROUNDS = 8
DATA_ARGS = {"num_partitions": AGENTS, "alpha": None, "seed": 0}
PROTECTIVE = {"median_weight_cap": 1.0, "metric_median_cap": 1.0, "norm_clip": 1.5}
JOBS: dict[str, dict[str, Any]] = {"clean": {}, "trusting": {}, "protected": PROTECTIVE}


class ForgingTrainer(LocalTrainer):
    """Answers every validation with a perfect score over 10**12 examples."""

    def evaluate(self, *args: Any, **kwargs: Any) -> tuple[float, float, int]:
        return 0.0, 1.0, 10**12


def lie(agent: EdgeAgent) -> None:
    honest = agent.train_fn

    def noisy(task: Task, model: Any, identity: AgentIdentity) -> UpdatePlan:
        plan = honest(task, model, identity)
        if task.job != "clean":
            # Seeded by job and round: the jobs' tasks reach the liar in whatever order.
            rng = np.random.default_rng([7, zlib.crc32(task.job.encode()), task.round])
            delta = plan.outcome.delta
            scale = 5.0 * float(np.std(delta))
            plan.outcome.delta = rng.normal(0.0, scale, delta.shape).astype(delta.dtype)
            plan.outcome.num_examples = 10**9
        return plan

    agent.train_fn = noisy


def true_accuracy(run_dir: Path) -> float:
    restored = checkpoint.load(run_dir / "checkpoint")
    assert restored is not None
    _, tensors = restored
    model = make_model()
    load_numpy_state(model, tensors)
    test = load_test(**DATA_ARGS)  # type: ignore[arg-type]
    with torch.no_grad():
        _, accuracy, _ = evaluate_model(model, *test.tensors)
    return float(accuracy)


def reported_accuracy(run_dir: Path) -> float:
    end = next(e for e in read_events(run_dir / "events.jsonl") if e["event"] == "JOB_END")
    return float(end["data"]["accuracy"])


async def test_one_lying_agent_of_eight_is_bounded_by_the_protective_setting(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare
    service = CoordinatorService(settings, runs_dir=tmp_path)
    for name, trust in JOBS.items():
        service.submit(
            job_config(
                name=name,
                data_args=DATA_ARGS,
                rounds=ROUNDS,
                num_participants=AGENTS,  # every agent, every round: the liar always counts
                overcommitment=1.0,
                min_agents=AGENTS,
                clients_required=AGENTS,
                round_timeout=60,
                eval_interval=ROUNDS,
                seed=1,
                trust=trust,
            )
        )
    forging = ForgingTrainer("cpu", trusted=DEFAULT_TRUSTED)
    # Execute
    async with (
        running_agents(settings, AGENTS - 1),
        running_agents(settings, 1, first=AGENTS - 1, trainer=forging) as liars,
    ):
        lie(liars[0])
        async with asyncio.timeout(240):
            results = await service.serve(exit_when_idle=True)
    # Assert
    assert results == dict.fromkeys(JOBS, True)
    true = {name: true_accuracy(tmp_path / name) for name in JOBS}
    reported = {name: reported_accuracy(tmp_path / name) for name in JOBS}
    print(f"true {true}\nreported {reported}")
    assert true["trusting"] < true["clean"] - 0.2  # the attack works on plain FedAvg ...
    assert abs(true["protected"] - true["clean"]) <= 0.02  # ... and is bounded here
    assert abs(reported["protected"] - true["protected"]) <= 0.02
    # The forged validations reach the clean job too: its default metric cap bounds them.
    assert abs(reported["clean"] - true["clean"]) <= 0.02
