"""MNIST-5k: a small MLP on 5,000 real MNIST digits, for studies with hundreds of clients.

``make_model`` and ``load_partition`` are a job's ``model`` and ``data`` entry points:

    model: fedbus.examples.mnist:make_model
    data: fedbus.examples.mnist:load_partition
    data_args: {path: ../shared/data/mnist_5k.csv.gz, num_partitions: 1000, alpha: 0.5}

The file (``path``, a data argument: nothing here assumes where it lives) is a gzipped
CSV of 5,000 rows, 784 pixel values 0-255 then the label. It is read once per process
and the partition table once per (file, num_partitions, alpha, seed): an emulator runs
hundreds of agents in one process and every one of them calls ``load_partition``.

Partitions are IID (``alpha`` None) or Dirichlet(alpha) label skew
(:func:`fedbus.examples.partition.dirichlet_partition`). With 5,000 samples and 500+ clients a
partition holds ~10 samples, and a Dirichlet draw leaves some partitions with fewer than
that or none at all; those are topped up to ``MIN_PARTITION`` samples with samples taken
from the largest partitions (seeded), so every agent has at least one training and one
test sample. Every agent holds out ``test_frac`` of its own partition for validation;
over all agents the held-out samples form one global test set of ~``test_frac`` x 5,000.

``load_test`` returns that global test set, every partition's held-out split concatenated
in partition order (~1,000 samples at ``test_frac`` 0.2, the exact count depends on the
partitioning), so a coordinator can evaluate the global model on it. It takes the job's
``data_args`` as they are (all keywords), plus ``limit``:

    test_data: fedbus.examples.mnist:load_test
    test_data_args: {path: ../shared/data/mnist_5k.csv.gz, num_partitions: 1000, alpha: 0.5}
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fedbus.examples.partition import (
    dirichlet_partition,
    iid_partition,
    sample_indices,
    split_train_test,
)

NUM_FEATURES = 784
NUM_CLASSES = 10
MIN_PARTITION = 3
"""Smallest partition after top-up: 2 training samples and 1 test sample at test_frac 0.2."""
_MEAN, _STD = 0.1307, 0.3081  # the usual MNIST pixel statistics (of x / 255)


def make_model() -> nn.Module:
    """784-128-10 MLP (~102k parameters): a few ms per local step on one CPU core."""
    return nn.Sequential(nn.Linear(NUM_FEATURES, 128), nn.ReLU(), nn.Linear(128, NUM_CLASSES))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 normalised, y int64) of the whole file; read once per process."""
    with gzip.open(path, "rt") as f:
        rows = [line for line in f.read().splitlines() if line.strip()]
    # One C-level parse of the whole file (np.loadtxt takes ~2.5x longer).
    flat = np.fromstring(",".join(rows), dtype=np.float32, sep=",")
    width = NUM_FEATURES + 1
    if not rows or flat.size != len(rows) * width:
        raise ValueError(f"{path}: expected rows of {NUM_FEATURES} pixel values and a label")
    raw = flat.reshape(len(rows), width)
    x = ((raw[:, :NUM_FEATURES] / 255.0 - _MEAN) / _STD).astype(np.float32)
    y = raw[:, NUM_FEATURES].astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def top_up(parts: list[np.ndarray], min_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Move random samples from the largest partitions to every one below ``min_size``."""
    parts = [p.copy() for p in parts]
    for i in range(len(parts)):
        while len(parts[i]) < min_size:
            donor = max(range(len(parts)), key=lambda j: len(parts[j]))
            if len(parts[donor]) <= min_size:
                return [np.sort(p) for p in parts]  # nothing left to give
            pick = int(rng.integers(len(parts[donor])))
            parts[i] = np.append(parts[i], parts[donor][pick])
            parts[donor] = np.delete(parts[donor], pick)
    return [np.sort(p) for p in parts]


@functools.lru_cache(maxsize=16)
def _partitions(
    path: str, num_partitions: int, alpha: float | None, seed: int
) -> tuple[np.ndarray, ...]:
    _, y = _load(path)
    if num_partitions < 1 or num_partitions > len(y):
        raise ValueError(f"num_partitions must be in 1..{len(y)}, got {num_partitions}")
    if alpha is None or alpha <= 0:
        parts = iid_partition(len(y), num_partitions, seed)
    else:
        parts = dirichlet_partition(y, num_partitions, alpha, seed)
    floor = min(MIN_PARTITION, len(y) // num_partitions)
    return tuple(top_up(parts, floor, np.random.default_rng([seed, num_partitions])))


def load_partition(
    partition: int,
    num_partitions: int,
    *,
    path: str,
    alpha: float | None = 0.5,
    seed: int = 0,
    test_frac: float = 0.2,
) -> tuple[TensorDataset, TensorDataset]:
    """Agent ``partition``'s (train, test) split of MNIST-5k; ``alpha`` None means IID."""
    if not 0 <= partition < num_partitions:
        raise ValueError(f"partition must be in 0..{num_partitions - 1}, got {partition}")
    key = str(Path(path).expanduser().resolve())
    x, y = _load(key)
    parts = _partitions(key, num_partitions, alpha, seed)
    train_idx, test_idx = split_train_test(parts[partition], test_frac, seed + partition)
    return (
        TensorDataset(torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx])),
        TensorDataset(torch.from_numpy(x[test_idx]), torch.from_numpy(y[test_idx])),
    )


def load_test(
    *,
    path: str,
    num_partitions: int,
    alpha: float | None = 0.5,
    seed: int = 0,
    test_frac: float = 0.2,
    limit: int | None = None,
) -> TensorDataset:
    """The global test set: every partition's test split of ``load_partition``, concatenated.

    Same arguments as ``load_partition`` (so the same split), all keywords. ``limit``
    keeps a fixed uniform subset of that many (seed 0, whatever ``seed`` is), in order.
    """
    key = str(Path(path).expanduser().resolve())
    x, y = _load(key)
    parts = _partitions(key, num_partitions, alpha, seed)
    # The same split_train_test call as load_partition, so no test sample is ever trained on.
    test_idx = np.concatenate(
        [split_train_test(part, test_frac, seed + i)[1] for i, part in enumerate(parts)]
    )
    test_idx = test_idx[sample_indices(len(test_idx), limit, 0)]
    return TensorDataset(torch.from_numpy(x[test_idx]), torch.from_numpy(y[test_idx]))
