"""The metadata of an agent's replies that carry no training: failures and refusals."""

from __future__ import annotations

from typing import Any

from fedbus.protocol.messages import ResultMeta, Task, UpdateMeta

# Reasons of a refusal (a ``success: false`` reply to a task that was never started).
REFUSED_MODEL_MOVED_ON = "model_moved_on"  # a newer model (or another run's) is held
REFUSED_MODEL_MISSING = "model_missing"  # the task's model never arrived


def result_fields(task: Task, agent: str, task_id: str, round_: int) -> dict[str, Any]:
    """What every ResultMeta answering (a validation of) ``task`` carries."""
    return {
        "job": task.job,
        "round": round_,
        "agent": agent,
        "task_id": task_id,
        "model_version": task.model_version,
    }


def failure_reply(
    task: Task, agent: str, reason: str, validation: ResultMeta | None = None
) -> UpdateMeta | ResultMeta:
    """``task`` failed (or was refused) for ``reason``: a result for a validation task, else
    an update with no tensors (carrying a folded ``validation`` when there is one)."""
    common: dict[str, Any] = {
        "job": task.job,
        "round": task.round,
        "agent": agent,
        "task_id": task.task_id,
        "success": False,
        "reason": reason,
    }
    if task.kind == "validate":
        return ResultMeta(model_version=task.model_version, **common)
    return UpdateMeta(
        base_version=task.model_version, encoding="none", validation=validation, **common
    )


def refused_validation(task: Task, agent: str, reason: str) -> ResultMeta | None:
    """The refusal of the validation folded into ``task`` (``validate_first``), if any."""
    request = task.validate_first
    if request is None:
        return None
    fields = result_fields(task, agent, request.task_id, request.round)
    return ResultMeta(**fields, success=False, reason=reason)
