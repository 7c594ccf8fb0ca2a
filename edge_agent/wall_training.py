"""Training on the wall clock: fixed steps, or the adaptive budget planner fed by measurements.

On the virtual clock the time model prices steps and transfers (:mod:`edge_agent.emulation`);
here the agent's own :class:`~edge_agent.measurements.Measurements` do: the planner starts
from the EWMA of past steps on the job's model (a few timed warm-up steps on the first
task of a model), is then fed the seconds each block of steps really took, and prices an
upload of ``keep`` with the measured upload throughput. Its budget is ``t_budget`` minus
what the task has already spent since the agent received it (waiting for the model, a
folded validation, the warm-up), minus a small reserve for what follows the plan (top-k,
encoding) — all on the agent's monotonic clock, never its calendar clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from edge_agent.adaptive import StepCost, run_adaptive
from edge_agent.compression import upload_bytes
from edge_agent.measurements import Measurements
from edge_agent.model_store import GlobalModel
from edge_agent.trainer import LocalTrainer, TrainOutcome, TrainSession
from fedbus.protocol.messages import Task

WARMUP_STEPS = 3
# Kept back from the budget for the work after the plan's last step: the top-k selection,
# encoding the update and handing it to the socket (a few ms on the models in this repo).
RESERVE_FRAC = 0.05


@dataclass(frozen=True)
class WallOutcome:
    outcome: TrainOutcome
    upload_s: float  # the planned (estimated) upload time of what will be sent


def value_dtype_of(task: Task) -> type[np.floating]:
    return np.float16 if task.config.value_dtype == "float16" else np.float32


def train_on_wall(
    trainer: LocalTrainer,
    measurements: Measurements,
    task: Task,
    model: GlobalModel,
    partition: int,
    *,
    seed: int,
    elapsed: Callable[[], float],
) -> WallOutcome:
    """:func:`plan_and_train`; a GPU out of memory is a failed update with the reason.

    The allocator's cached blocks are released first, so the agent's next task (perhaps a
    smaller model) starts from free memory rather than failing too.
    """
    try:
        return plan_and_train(
            trainer, measurements, task, model, partition, seed=seed, elapsed=elapsed
        )
    except torch.cuda.OutOfMemoryError as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        reason = f"{trainer.device} out of memory: {str(exc).splitlines()[0]}"[:500]
        empty = TrainOutcome(
            delta=np.zeros(0, np.float32),
            num_examples=0,
            trained_samples=0,
            loss=0.0,
            utility=0.0,
            steps=0,
            compute_seconds=0.0,
            success=False,
            reason=reason,
        )
        return WallOutcome(empty, 0.0)


def plan_and_train(
    trainer: LocalTrainer,
    measurements: Measurements,
    task: Task,
    model: GlobalModel,
    partition: int,
    *,
    seed: int,
    elapsed: Callable[[], float],
) -> WallOutcome:
    """Train ``task``; ``elapsed()``: seconds since the agent received it (monotonic)."""
    config = task.config
    params = model.layout.num_params
    dtype = value_dtype_of(task)

    def upload_s(keep: float) -> float:
        return measurements.upload_seconds(upload_bytes(params, keep, dtype))

    if not config.adaptive:
        outcome = trainer.train(config, partition, model.tensors, model.layout, seed=seed)
        outcome.keep_frac = config.keep_frac
    else:
        if config.t_budget is None:
            raise ValueError("adaptive training needs the task's t_budget")
        warm_up_s = 0.0
        if measurements.step_estimate(config.model) is None:
            began = time.perf_counter()
            per_step = trainer.measure_step_seconds(config, partition, WARMUP_STEPS)
            warm_up_s = time.perf_counter() - began
            measurements.observe_steps(config.model, WARMUP_STEPS, per_step * WARMUP_STEPS)
        estimate = measurements.step_estimate(config.model)
        assert estimate is not None
        cost = StepCost(
            steps=lambda _steps, measured: measured,
            upload=upload_s,
            step_estimate=estimate,
            charge_measurement=True,
        )
        t_budget = config.t_budget

        def plan(session: TrainSession) -> None:
            # The budget is read here, after the model and data were loaded: that is spent too.
            run_adaptive(session, t_budget * (1.0 - RESERVE_FRAC) - elapsed(), cost)

        outcome = trainer.train(
            config, partition, model.tensors, model.layout, seed=seed, plan=plan
        )
        measurements.observe_steps(config.model, outcome.steps, outcome.compute_seconds)
        outcome.compute_seconds += warm_up_s  # spent on this round's clock: reported too
        planned = upload_s(outcome.keep_frac) if outcome.success else 0.0
        return WallOutcome(outcome, planned)
    measurements.observe_steps(config.model, outcome.steps, outcome.compute_seconds)
    planned = upload_s(outcome.keep_frac) if outcome.success else 0.0
    return WallOutcome(outcome, planned)
