"""An agent's validation of a model: with the job's compute package, a custom hook (a
Flower client's evaluate) or the agent's own trainer; a failure is reported, not raised."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from edge_agent.identity import AgentIdentity, ValidateFn
from edge_agent.model_store import GlobalModel
from edge_agent.packages import AgentPackages, validate_with_package
from edge_agent.replies import result_fields
from edge_agent.trainer import LocalTrainer
from edge_agent.updates import describe
from fedbus.protocol.messages import ResultMeta, Task

log = logging.getLogger(__name__)

# (kind, fn, *args) -> fn(*args), run where the agent places that kind of computation.
Compute = Callable[..., Awaitable[Any]]


async def validate(
    task: Task,
    model: GlobalModel,
    task_id: str,
    round_: int,
    *,
    identity: AgentIdentity,
    trainer: LocalTrainer,
    packages: AgentPackages | None,
    validate_fn: ValidateFn | None,
    compute: Compute,
) -> ResultMeta:
    """The ResultMeta of evaluating ``model`` for the validation ``task_id`` of ``round_``."""
    common = result_fields(task, identity.agent_id, task_id, round_)
    try:
        package = packages.loaded(task.config.package) if packages else None
        metrics: dict[str, float] = {}
        if package is not None and package.validates:
            loss, accuracy, n, metrics = await compute(
                "package-validate",
                validate_with_package,
                task,
                model.tensors,
                identity.partition,
                package,
            )
        elif validate_fn is not None:
            loss, accuracy, n, metrics = await compute(
                "custom-validate", validate_fn, task, model, identity
            )
        else:
            loss, accuracy, n = await compute(
                "validate", trainer.evaluate, task.config, identity.partition, model.tensors
            )
        return ResultMeta(**common, num_examples=n, loss=loss, accuracy=accuracy, metrics=metrics)
    except Exception as exc:
        # A validation's failure must not cost the training folded into the same task.
        log.exception("agent %s: validation %s failed", identity.agent_id, task_id)
        return ResultMeta(**common, success=False, reason=describe(exc))
