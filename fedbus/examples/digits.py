"""The built-in example: a small MLP on scikit-learn's bundled ``load_digits``.

``make_model`` and ``load_partition`` are the job's ``model`` and ``data`` entry points.
Partitions are IID or Dirichlet non-IID over labels (``alpha``), deterministic in
``seed``, and every agent holds out ``test_frac`` of its own partition for validation.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fedbus.examples.partition import dirichlet_partition, iid_partition, split_train_test


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


@functools.cache
def _load() -> tuple[np.ndarray, np.ndarray]:
    """The digits that ``sklearn.datasets.load_digits`` returns, read from the same file.

    Reading scikit-learn's bundled CSV directly skips importing scikit-learn (seconds on a
    small device), which every agent would otherwise pay on its first task.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise RuntimeError("scikit-learn is not installed; its bundled digits are the data")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return table[:, :-1] / 16.0, table[:, -1].astype(np.int64)


def load_partition(
    partition: int,
    num_partitions: int,
    *,
    alpha: float | None = 0.5,
    seed: int = 0,
    test_frac: float = 0.2,
) -> tuple[TensorDataset, TensorDataset]:
    """Agent ``partition``'s (train, test) split of digits; ``alpha`` None means IID."""
    x, y = _load()
    parts = _partitions(num_partitions, alpha, seed)
    train_idx, test_idx = split_train_test(parts[partition], test_frac, seed + partition)
    return (
        TensorDataset(torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx])),
        TensorDataset(torch.from_numpy(x[test_idx]), torch.from_numpy(y[test_idx])),
    )


@functools.lru_cache(maxsize=8)
def _partitions(num_partitions: int, alpha: float | None, seed: int) -> list[np.ndarray]:
    """The partition table, computed once per process (an emulator asks once per agent)."""
    _, y = _load()
    if alpha is None or alpha <= 0:
        return iid_partition(len(y), num_partitions, seed)
    return dirichlet_partition(y, num_partitions, alpha, seed)


def load_test(
    *, num_partitions: int, alpha: float | None = 0.5, seed: int = 0, test_frac: float = 0.2
) -> TensorDataset:
    """The global test set: every partition's held-out split, concatenated in order.

    A job's ``test_data`` (server-side evaluation) with the same arguments as its
    ``data_args``: the coordinator then scores exactly the samples the agents would.
    """
    x, y = _load()
    parts = _partitions(num_partitions, alpha, seed)
    test_idx = np.concatenate(
        [split_train_test(part, test_frac, seed + i)[1] for i, part in enumerate(parts)]
    )
    return TensorDataset(torch.from_numpy(x[test_idx]), torch.from_numpy(y[test_idx]))
