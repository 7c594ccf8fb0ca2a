"""Shared helpers: seeded generators and small stacks filled from a matrix."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.aggregation import UpdateStack


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240517)


def stack_of(matrix: np.ndarray, capacity: int | None = None) -> UpdateStack:
    """An UpdateStack whose first rows are ``matrix``'s rows."""
    k, p = matrix.shape
    stack = UpdateStack(p, capacity or k)
    for i in range(k):
        stack.put_dense(i, matrix[i])
    return stack
