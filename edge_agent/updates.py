"""The update an agent publishes: its plan's outcome encoded as an UpdateMeta + tensors.

Dense named deltas, or one flat top-k sparse delta below keep 1 (pure: no I/O).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from edge_agent.compression import effective_keep, sparsify
from edge_agent.error_feedback import ResidualStore, compress_with_memory
from edge_agent.model_store import GlobalModel
from edge_agent.trainer import TrainOutcome
from fedbus.protocol.codec import SparseTensor, Tensor
from fedbus.protocol.messages import ResultMeta, Task, Timings, UpdateMeta

T = TypeVar("T")


@dataclass(frozen=True)
class UpdatePlan:
    """What to upload: the outcome plus the virtual timings when the clock is virtual."""

    outcome: TrainOutcome
    timings: Timings


def describe(exc: Exception) -> str:
    """A failure's reason as it travels in an update or result (bounded in length)."""
    return f"{type(exc).__name__}: {exc}"[:500]


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, tuple[float, float]]:
    """``fn(*args)`` and the (CPU of the calling thread, wall) seconds it took."""
    cpu, wall = time.thread_time(), time.perf_counter()
    result = fn(*args)
    return result, (time.thread_time() - cpu, time.perf_counter() - wall)


def l2_norm(values: np.ndarray) -> float:
    """||values||_2 accumulated in float64: a float32 sum of squares overflows above ~1e19."""
    return math.sqrt(float(np.einsum("i,i->", values, values, dtype=np.float64)))


def build_update(
    task: Task,
    agent_id: str,
    plan: UpdatePlan,
    model: GlobalModel,
    validation: ResultMeta | None = None,
    residuals: ResidualStore | None = None,
) -> tuple[UpdateMeta, dict[str, Tensor]]:
    """The update message: dense named deltas, or one sparse flat delta below keep 1.

    With the task's ``error_feedback`` and a ``residuals`` store, the delta first takes
    back what this agent's last upload for the job dropped (:mod:`edge_agent.error_feedback`).
    """
    outcome = plan.outcome
    value_dtype = np.float16 if task.config.value_dtype == "float16" else np.float32
    tensors: dict[str, Tensor] = {}
    encoding = "none"
    # The norm of what is uploaded (the top-k part when sparse), PyramidFL's gradient size.
    grad_norm = 0.0
    if outcome.success and task.config.error_feedback and residuals is not None:
        outcome.keep_frac = effective_keep(outcome.delta.size, outcome.keep_frac, value_dtype)
        tensors, encoding, grad_norm = compress_with_memory(
            task, agent_id, outcome, model, residuals, value_dtype
        )
    elif outcome.success:
        outcome.keep_frac = effective_keep(outcome.delta.size, outcome.keep_frac, value_dtype)
        if outcome.keep_frac < 1.0:
            sparse = sparsify(outcome.delta, outcome.keep_frac, value_dtype)
            tensors["delta"] = SparseTensor(sparse.size, sparse.indices, sparse.values)
            grad_norm = l2_norm(sparse.values)
            encoding = "sparse"
        else:
            delta = outcome.delta.astype(value_dtype, copy=False)
            tensors = dict(model.layout.unflatten(delta))
            grad_norm = l2_norm(outcome.delta)
            encoding = "dense"
    meta = UpdateMeta(
        job=task.job,
        round=task.round,
        agent=agent_id,
        task_id=task.task_id,
        base_version=task.model_version,
        success=outcome.success,
        reason=outcome.reason,
        num_examples=outcome.num_examples,
        encoding=encoding,  # type: ignore[arg-type]
        utility=outcome.utility,
        grad_norm=grad_norm,
        loss=outcome.loss,
        steps=outcome.steps,
        steps_phase1=outcome.steps_phase1,
        steps_phase2=outcome.steps_phase2,
        keep_frac=outcome.keep_frac,
        timings=plan.timings,
        validation=validation,
        metrics=outcome.extra,
    )
    return meta, tensors
