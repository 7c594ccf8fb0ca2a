"""The --device cuda path on a real GPU: training on it, and a real out-of-memory.

Skipped, with the reason, where torch sees no CUDA device (the CPU-only CI machine).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from edge_agent.measurements import Measurements
from edge_agent.model_store import GlobalModel
from edge_agent.torch_state import state_to_numpy
from edge_agent.trainer import LocalTrainer
from edge_agent.wall_training import train_on_wall
from fedbus.examples.digits import make_model
from fedbus.protocol import bus
from fedbus.protocol.messages import Task, TrainConfig
from fedbus.protocol.params import ParamLayout

from .test_wall_adaptive import AgentSpec, run_job

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device here (torch.cuda.is_available() is False): the --device cuda "
    "path needs an NVIDIA GPU",
)


class GreedyNet(nn.Module):
    """Asks the GPU for 4 TiB on its first forward pass: a real CUDA out-of-memory."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        waste = torch.empty(2**40, device=x.device)
        return self.layer(x) + waste[:1]


def greedy_model() -> nn.Module:
    return GreedyNet()


def digits_task(model: str = "fedbus.examples.digits:make_model") -> Task:
    config = TrainConfig(
        model=model,
        data="fedbus.examples.digits:load_partition",
        data_args={"num_partitions": 4, "alpha": 0.5, "seed": 0},
        local_steps=10,
        batch_size=16,
    )
    return Task(job="j", round=1, task_id="t", kind="train", model_version=0, config=config)


def test_a_real_cuda_out_of_memory_is_a_failed_update_and_the_gpu_trains_on() -> None:
    trainer = LocalTrainer("cuda")
    tensors = state_to_numpy(GreedyNet())
    greedy = GlobalModel("j", 0, tensors, ParamLayout.from_tensors(tensors))
    result = train_on_wall(
        trainer, Measurements(), digits_task(f"{__name__}:greedy_model"), greedy, 0,
        seed=1, elapsed=lambda: 0.0,
    )  # fmt: skip
    assert not result.outcome.success
    assert result.outcome.reason.startswith("cuda out of memory: CUDA out of memory")
    tensors = state_to_numpy(make_model())
    digits = GlobalModel("j", 0, tensors, ParamLayout.from_tensors(tensors))
    again = train_on_wall(
        trainer, Measurements(), digits_task(), digits, 0, seed=1, elapsed=lambda: 0.0
    )
    assert again.outcome.success and again.outcome.steps == 10


async def test_a_wall_clock_adaptive_job_on_the_gpu_meets_its_budget(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    t_budget = 2.0
    ok, _, updates = await run_job(
        settings,
        tmp_path,
        [AgentSpec(device="cuda"), AgentSpec(device="cuda", link="150kbit")],
        name="gpu",
        rounds=3,
        num_participants=2,
        clients_required=2,
        adaptive_training=True,
        t_budget=t_budget,
        round_timeout=30,
        eval_interval=0,
    )
    assert ok and len(updates) == 6
    for meta in updates:
        assert meta.success and meta.timings.total <= 1.1 * t_budget, meta
