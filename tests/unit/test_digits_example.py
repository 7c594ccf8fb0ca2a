"""The built-in example's data: exactly scikit-learn's digits, partitioned reproducibly."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from fedbus.examples.digits import _load, load_partition


def test_reads_exactly_sklearns_digits() -> None:
    x, y = _load()
    digits = load_digits()
    np.testing.assert_array_equal(x, (digits.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, digits.target)


def test_partitions_cover_the_data_once_and_are_deterministic() -> None:
    parts = [load_partition(i, 8, alpha=0.5, seed=3) for i in range(8)]
    sizes = [len(train) + len(test) for train, test in parts]
    assert sum(sizes) == 1797 and min(sizes) >= 10
    again = load_partition(2, 8, alpha=0.5, seed=3)
    assert np.array_equal(again[0].tensors[1].numpy(), parts[2][0].tensors[1].numpy())
    # Dirichlet(0.5) is label-skewed: some partition misses at least one class entirely.
    assert any(len(np.unique(train.tensors[1].numpy())) < 10 for train, _ in parts)
