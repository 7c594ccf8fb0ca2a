"""Flower clients, run unchanged by a fedbus agent: ``edge-agent run --flower-client M:F``.

``F`` is the client's ``client_fn`` as Flower calls it: ``client_fn(context)`` with
``context.node_config`` holding ``partition-id`` and ``num-partitions``, returning a
``NumPyClient`` (``get_parameters`` / ``fit`` / ``evaluate``) or a ``Client`` (the same on
``FitIns`` / ``EvaluateIns``). A fedbus train task is ``fit``, a validate task is
``evaluate``; the config dict they get carries the task's fields (``server_round``,
``local_steps``, ``batch_size``, ``learning_rate``, ``seed``, ...). The returned metrics
are kept: fit's with the update, evaluate's with the result (``accuracy`` in [0, 1] also
becomes the result's accuracy).

Parameters travel as fedbus named tensors ``p0000``, ``p0001``, ... in Flower's list
order; ``initial_parameters`` writes a job's seed file from the client's own
``get_parameters``, as Flower's server asks one client for them. ``flwr`` is imported
only here and only when used (optional dependency: ``pip install 'fedbus[flower]'``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.trainer import TrainOutcome
from fedbus.packages.entry import check_metrics
from fedbus.protocol.entry_points import resolve
from fedbus.protocol.messages import Scalar, Task, Timings
from fedbus.protocol.params import ParamLayout

if TYPE_CHECKING:
    from edge_agent.agent import AgentIdentity, UpdatePlan
    from edge_agent.model_store import GlobalModel

Metrics = dict[str, float]


def parameter_names(count: int) -> list[str]:
    return [f"p{i:04d}" for i in range(count)]


def _numbers(metrics: Any, what: str) -> Metrics:
    """Flower metrics (bool, bytes, str allowed there) narrowed to fedbus's finite numbers."""
    numeric = {
        k: v
        for k, v in dict(metrics or {}).items()
        if isinstance(v, int | float | np.number) and not isinstance(v, bool)
    }
    return check_metrics(numeric, what)


class FlowerClientRunner:
    """Calls a Flower ``client_fn`` for each task and maps fit / evaluate onto fedbus."""

    def __init__(self, client_fn: str | Callable[..., Any], num_partitions: int = 1) -> None:
        self.client_fn = resolve(client_fn) if isinstance(client_fn, str) else client_fn
        self.num_partitions = num_partitions

    def client(self, partition: int) -> Any:
        from flwr.common import Context, RecordDict

        context = Context(
            run_id=0,
            node_id=partition,
            node_config={"partition-id": partition, "num-partitions": self.num_partitions},
            state=RecordDict(),
            run_config={},
        )
        return self.client_fn(context)

    @staticmethod
    def config(task: Task, partition: int) -> dict[str, Scalar]:
        c = task.config
        return {
            "server_round": task.round,
            "local_steps": c.local_steps,
            "batch_size": c.batch_size,
            "learning_rate": c.learning_rate,
            "momentum": c.momentum,
            "seed": c.seed,
            "partition": partition,
            "task_id": task.task_id,
            "model_version": task.model_version,
        }

    # -- the three calls, on a NumPyClient or a Client --------------------------------
    def get_parameters(self, partition: int) -> list[np.ndarray]:
        from flwr.client import NumPyClient
        from flwr.common import GetParametersIns, parameters_to_ndarrays

        client = self.client(partition)
        if isinstance(client, NumPyClient):
            return list(client.get_parameters({}))
        return parameters_to_ndarrays(client.get_parameters(GetParametersIns({})).parameters)

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Scalar], partition: int
    ) -> tuple[list[np.ndarray], int, Metrics]:
        from flwr.client import NumPyClient
        from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays

        client = self.client(partition)
        if isinstance(client, NumPyClient):
            new, count, metrics = client.fit(parameters, _flower_config(config))
        else:
            res = client.fit(FitIns(ndarrays_to_parameters(parameters), _flower_config(config)))
            new, count, metrics = (
                parameters_to_ndarrays(res.parameters),
                res.num_examples,
                res.metrics,
            )
        return list(new), int(count), _numbers(metrics, "the Flower client's fit")

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Scalar], partition: int
    ) -> tuple[float, int, Metrics]:
        from flwr.client import NumPyClient
        from flwr.common import EvaluateIns, ndarrays_to_parameters

        client = self.client(partition)
        if isinstance(client, NumPyClient):
            loss, count, metrics = client.evaluate(parameters, _flower_config(config))
        else:
            res = client.evaluate(
                EvaluateIns(ndarrays_to_parameters(parameters), _flower_config(config))
            )
            loss, count, metrics = res.loss, res.num_examples, res.metrics
        return float(loss), int(count), _numbers(metrics, "the Flower client's evaluate")

    # -- as the agent's train_fn and validate_fn --------------------------------------
    def train(self, task: Task, model: GlobalModel, identity: AgentIdentity) -> UpdatePlan:
        from edge_agent.agent import UpdatePlan  # the agent imports this module's users

        outcome = self.train_outcome(task, model.tensors, model.layout, identity.partition)
        return UpdatePlan(outcome, Timings())

    def validate(
        self, task: Task, model: GlobalModel, identity: AgentIdentity
    ) -> tuple[float, float, int, Metrics]:
        return self.validate_tensors(task, model.tensors, model.layout, identity.partition)

    def train_outcome(
        self,
        task: Task,
        tensors: Mapping[str, np.ndarray],
        layout: ParamLayout,
        partition: int,
    ) -> TrainOutcome:
        """``fit`` from the global tensors, as the delta the agent uploads."""
        started = time.perf_counter()
        names = layout.names
        new, count, metrics = self.fit(
            [tensors[n] for n in names], self.config(task, partition), partition
        )
        if len(new) != len(names):
            raise ValueError(
                f"the Flower client returned {len(new)} arrays, the model has {len(names)}"
            )
        weights = {n: np.asarray(a, dtype=np.float32) for n, a in zip(names, new, strict=True)}
        delta = layout.flatten(weights)
        np.subtract(delta, layout.flatten(tensors), out=delta)
        return TrainOutcome(
            delta=delta,
            num_examples=count,
            trained_samples=count,
            loss=metrics.get("loss", 0.0),
            utility=0.0,
            steps=task.config.local_steps,
            compute_seconds=time.perf_counter() - started,
            success=count > 0 and bool(np.isfinite(delta).all()),
            reason="" if count > 0 else "the Flower client's fit saw no examples",
            extra=metrics,
        )

    def validate_tensors(
        self,
        task: Task,
        tensors: Mapping[str, np.ndarray],
        layout: ParamLayout,
        partition: int,
    ) -> tuple[float, float, int, Metrics]:
        """``evaluate``: (loss, accuracy, examples, metrics)."""
        loss, count, metrics = self.evaluate(
            [tensors[n] for n in layout.names], self.config(task, partition), partition
        )
        accuracy = metrics.get("accuracy", 0.0)
        return loss, accuracy if 0.0 <= accuracy <= 1.0 else 0.0, count, metrics


def num_partitions_of(task: Task) -> int:
    """Flower's ``num-partitions`` for a task: its ``data_args.num_partitions``, else 1."""
    value = task.config.data_args.get("num_partitions", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def initial_parameters(
    client_fn: str, partition: int = 0, num_partitions: int = 1
) -> dict[str, np.ndarray]:
    """The client's own initial parameters as a job's seed model (float32, named p0000...)."""
    arrays = FlowerClientRunner(client_fn, num_partitions).get_parameters(partition)
    return {
        n: np.asarray(a, dtype=np.float32)
        for n, a in zip(parameter_names(len(arrays)), arrays, strict=True)
    }


def cmd_seed(client_fn: str, out: str, num_partitions: int) -> int:
    """``edge-agent flower-seed``: write the client's initial parameters as a seed file."""
    import sys
    from pathlib import Path

    sys.path.append(str(Path.cwd()))  # the client's module beside where it is run
    arrays = initial_parameters(client_fn, 0, num_partitions)
    with Path(out).open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub: ** might name allow_pickle
    print(f"{out}: {len(arrays)} arrays; use it with `initial_model: {out}` in the job")
    return 0


def _flower_config(config: dict[str, Scalar]) -> dict[str, bool | bytes | float | int | str]:
    """A task's config as Flower's ``Config`` type: Flower has no None, so unset keys drop."""
    return {k: v for k, v in config.items() if v is not None}
