"""Wall-clock training: the planner fed by measurements, slowdown, and a GPU out of memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edge_agent.measurements import Measurements
from edge_agent.model_store import GlobalModel
from edge_agent.torch_state import state_to_numpy
from edge_agent.trainer import LocalTrainer
from edge_agent.wall_training import WARMUP_STEPS, train_on_wall
from fedbus.examples.digits import make_model
from fedbus.protocol.messages import Task, TrainConfig
from fedbus.protocol.params import ParamLayout

DIGITS = {
    "model": "fedbus.examples.digits:make_model",
    "data": "fedbus.examples.digits:load_partition",
    "data_args": {"num_partitions": 4, "alpha": 0.5, "seed": 0},
    "local_steps": 10,
    "batch_size": 16,
    "seed": 3,
}


def task(**config: object) -> Task:
    return Task(
        job="j",
        round=1,
        task_id="t1",
        kind="train",
        model_version=0,
        config=TrainConfig(**{**DIGITS, **config}),  # type: ignore[arg-type]
    )


def global_model() -> GlobalModel:
    torch.manual_seed(0)
    tensors = state_to_numpy(make_model())
    return GlobalModel("j", 0, tensors, ParamLayout.from_tensors(tensors))


def train(
    trainer: LocalTrainer, measurements: Measurements, t: Task, elapsed: float = 0.0
) -> tuple[bool, str, int, float, float]:
    result = train_on_wall(
        trainer, measurements, t, global_model(), 0, seed=1, elapsed=lambda: elapsed
    )
    o = result.outcome
    return o.success, o.reason, o.steps, o.keep_frac, result.upload_s


def test_the_first_adaptive_task_times_warm_up_steps_then_plans_on_them() -> None:
    measurements = Measurements()
    ok, _, steps, keep, upload_s = train(
        LocalTrainer("cpu"), measurements, task(adaptive=True, t_budget=5.0)
    )
    assert ok and steps >= 1 and 0.3 <= keep <= 1.0
    assert measurements.step_estimate(DIGITS["model"]) is not None
    assert upload_s > 0  # the planned upload of a dense delta, at the prior's rate


def test_a_slow_measured_uplink_makes_the_agent_send_a_top_k_fraction() -> None:
    measurements = Measurements()
    measurements.observe_upload(20_000, 1.0)  # 20 kB/s: the 38 kB dense delta takes ~2 s
    ok, _, steps, keep, upload_s = train(
        LocalTrainer("cpu"), measurements, task(adaptive=True, t_budget=2.0)
    )
    assert ok and steps >= 1
    assert 0.3 <= keep < 1.0
    assert upload_s <= 2.0 * 0.95


def test_time_already_spent_counts_against_the_budget() -> None:
    # 9 of 10 s went on the download: one step and the smallest upload no longer fit.
    measurements = Measurements()
    measurements.observe_upload(10_000, 1.0)
    ok, reason, steps, _, upload_s = train(
        LocalTrainer("cpu"), measurements, task(adaptive=True, t_budget=10.0), elapsed=9.0
    )
    assert (ok, reason, steps, upload_s) == (False, "budget too small for one step", 0, 0.0)


def test_without_adaptive_the_task_runs_its_steps_at_its_keep_fraction() -> None:
    ok, _, steps, keep, _ = train(LocalTrainer("cpu"), Measurements(), task(keep_frac=0.5))
    assert ok and steps == 10 and keep == 0.5


def test_slowdown_sleeps_x_minus_one_times_each_computation_and_measures_it() -> None:
    sleeps: list[float] = []
    trainer = LocalTrainer("cpu", slowdown=4.0, sleep=sleeps.append)
    per_step = trainer.measure_step_seconds(TrainConfig(**DIGITS), 0, WARMUP_STEPS)  # type: ignore[arg-type]
    # One untimed warm-up step, then WARMUP_STEPS timed ones, each followed by a sleep of
    # 3x its own duration; the measurement is the slowed-down time, 4x the real steps.
    assert len(sleeps) == WARMUP_STEPS + 1 and all(s > 0 for s in sleeps)
    real = sum(sleeps[1:]) / 3.0
    assert per_step * WARMUP_STEPS == pytest.approx(4.0 * real)


class OutOfMemoryNet(nn.Module):
    """Stands in for a GPU that is absent: its forward pass raises what CUDA raises."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 7.6 GiB total)\nmore"
        )


def out_of_memory_model() -> nn.Module:
    return OutOfMemoryNet()


def test_out_of_memory_is_a_failed_update_with_the_reason() -> None:
    model_spec = f"{__name__}:out_of_memory_model"
    tensors = state_to_numpy(OutOfMemoryNet())
    model = GlobalModel("j", 0, tensors, ParamLayout.from_tensors(tensors))
    result = train_on_wall(
        LocalTrainer("cpu", trusted=("fedbus.examples", __name__)),
        Measurements(),
        task(model=model_spec),
        model,
        0,
        seed=1,
        elapsed=lambda: 0.0,
    )  # fmt: skip
    assert not result.outcome.success
    assert result.outcome.reason == (
        "cpu out of memory: CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 7.6 GiB total)"
    )
    assert result.outcome.delta.size == 0 and result.upload_s == 0.0


@pytest.mark.parametrize("slowdown", [0.5, float("nan")])
def test_a_slowdown_below_one_is_refused(slowdown: float) -> None:
    with pytest.raises(ValueError, match="slowdown"):
        LocalTrainer("cpu", slowdown=slowdown)


def test_weights_load_back_after_the_warm_up_changed_them() -> None:
    trainer = LocalTrainer("cpu")
    config = TrainConfig(**DIGITS)  # type: ignore[arg-type]
    model = global_model()
    trainer.evaluate(config, 0, model.tensors)  # the slot now holds the global model
    trainer.measure_step_seconds(config, 0, 2)
    loaded = trainer.model(config.model)
    trainer.evaluate(config, 0, model.tensors)
    flat = ParamLayout.from_tensors(model.tensors).flatten(state_to_numpy(loaded))
    np.testing.assert_array_equal(flat, model.layout.flatten(model.tensors))
