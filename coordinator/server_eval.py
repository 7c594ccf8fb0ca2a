"""Server-side evaluation: the coordinator scores the global model on one fixed test set.

Federated validation asks agents to evaluate on their own held-out splits; with hundreds
of agents that costs a round trip per agent and the answer depends on who is online. A
job that names ``test_data`` (an entry point returning a torch Dataset of (x, y), or a
(train, test) pair whose test half is used) is instead evaluated here, on the same
samples every time, in a worker thread so the event loop keeps serving the bus.

torch is imported on first use, not at module import: a coordinator without a test set
never pays for it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class ServerEvaluator:
    """The job's model and test set, built once; ``evaluate`` loads weights and scores them."""

    def __init__(self, model: str, test_data: str, test_args: Mapping[str, Any]) -> None:
        self._model_spec = model
        self._test_spec = test_data
        self._test_args = dict(test_args)
        self._built: tuple[Any, Any, Any] | None = None

    def _build(self) -> tuple[Any, Any, Any]:
        import torch

        from edge_agent.trainer import as_tensors
        from fedbus.protocol.entry_points import resolve

        dataset = resolve(self._test_spec)(**self._test_args)
        if isinstance(dataset, tuple) and len(dataset) == 2:
            dataset = dataset[1]  # a (train, test) pair, as a data entry point returns
        x, y = as_tensors(dataset)
        if int(y.shape[0]) == 0:
            raise ValueError(f"test_data {self._test_spec}: the test set is empty")
        with torch.random.fork_rng():  # building the model must not move the job's RNG
            model = resolve(self._model_spec)()
        return model, x, y

    def evaluate(self, tensors: Mapping[str, np.ndarray]) -> tuple[float, float, int]:
        """(mean loss, accuracy, examples) of the model with these weights."""
        from edge_agent.torch_state import load_numpy_state
        from edge_agent.trainer import evaluate_model

        if self._built is None:
            self._built = self._build()
        model, x, y = self._built
        load_numpy_state(model, tensors)
        return evaluate_model(model, x, y)
