"""Seeded partitioners shared by the example data sets (IID and Dirichlet label skew)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def iid_partition(num_samples: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def dirichlet_partition(
    labels: np.ndarray, num_partitions: int, alpha: float, seed: int, min_size: int = 10
) -> list[np.ndarray]:
    """Label-skewed partitions: each class is split across partitions by a Dir(alpha) draw.

    Redraws (up to 100 times, same generator) until every partition holds ``min_size``
    samples, the usual guard that keeps small-alpha splits from leaving a client empty.
    """
    if num_partitions < 1:
        raise ValueError("num_partitions must be at least 1")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    floor = min(min_size, len(labels) // num_partitions)
    for _ in range(100):
        buckets: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for p, chunk in enumerate(np.split(idx, cuts)):
                buckets[p].append(chunk)
        parts = [np.sort(np.concatenate(b)) for b in buckets]
        if min(len(p) for p in parts) >= floor:
            return parts
    return parts


def split_train_test(
    indices: np.ndarray, test_frac: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(indices)
    n_test = max(1, round(len(order) * test_frac)) if len(order) > 1 else 0
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def sample_indices(num_samples: int, k: int | None, seed: int | Sequence[int]) -> np.ndarray:
    """A seeded uniform subset of ``k`` of ``range(num_samples)``, sorted (all when ``k`` is None).

    Sorted so a subset keeps the source's order: the same ``k`` and ``seed`` always pick
    the same samples, and a smaller data set is a quick stand-in for the full one.
    """
    if k is None or k >= num_samples:
        return np.arange(num_samples)
    if k < 1:
        raise ValueError(f"a subset needs at least 1 sample, got {k}")
    return np.sort(np.random.default_rng(seed).choice(num_samples, size=k, replace=False))
