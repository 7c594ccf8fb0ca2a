"""Median, trimmed mean and Krum against plain references, and against a poisoned minority."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import trim_mean

from coordinator.aggregation import (
    AggregationError,
    coordinate_median,
    fedavg,
    krum,
    krum_selection,
    pairwise_sq_distances,
    trimmed_mean,
)
from coordinator.aggregation._order import NETWORK_MAX_ROWS, batcher_pairs, pruned_pairs

from .conftest import stack_of

# Both order-statistic paths: the sorting network (K <= 32) and the per-row sort (K > 32).
COUNTS = [1, 2, 3, 4, 5, 9, 10, 17, 32, 33, 40, 41]


def test_counts_cover_both_paths() -> None:
    assert min(COUNTS) <= NETWORK_MAX_ROWS < max(COUNTS)


@pytest.mark.parametrize("n", range(1, 13))
def test_network_sorts_every_binary_input(n: int) -> None:
    # 0-1 principle: a comparator network sorts everything iff it sorts all 2**n bit vectors.
    bits = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.int8).T
    for i, j in batcher_pairs(n):
        bits[i], bits[j] = np.minimum(bits[i], bits[j]), np.maximum(bits[i], bits[j])

    assert np.all(np.diff(bits, axis=0) >= 0)


def test_pruned_network_is_exact_at_the_needed_positions(rng: np.random.Generator) -> None:
    for n in (7, 10, 25):
        needed = frozenset({n // 2 - 1, n // 2})
        values = rng.standard_normal((n, 500))
        pairs = pruned_pairs(n, needed)
        for i, j in pairs:
            values[i], values[j] = (
                np.minimum(values[i], values[j]),
                np.maximum(values[i], values[j]),
            )

        assert len(pairs) < len(batcher_pairs(n))
        for p in needed:
            np.testing.assert_array_equal(values[p], np.sort(values, axis=0)[p])


@pytest.mark.parametrize("n", COUNTS)
def test_median_matches_numpy(rng: np.random.Generator, n: int) -> None:
    matrix = rng.standard_normal((n, 1001)).astype(np.float32)
    matrix[:, :10] = 1.0  # ties
    stack = stack_of(matrix)

    for columns in (None, 100):
        got = coordinate_median(stack, list(range(n)), block_columns=columns)

        assert got.dtype == np.float32
        # the middle value itself, or its half-sum: one float32 rounding, as numpy's
        np.testing.assert_array_equal(got, np.median(matrix, axis=0))


def test_median_of_non_contiguous_rows(rng: np.random.Generator) -> None:
    matrix = rng.standard_normal((12, 300)).astype(np.float32)
    rows = [11, 0, 7, 3]
    stack = stack_of(matrix)

    got = coordinate_median(stack, rows, np.ones(4))

    np.testing.assert_array_equal(got, np.median(matrix[rows], axis=0))


@pytest.mark.parametrize("n", COUNTS)
@pytest.mark.parametrize("frac", [0.0, 0.1, 0.2, 0.45])
def test_trimmed_mean_matches_scipy(rng: np.random.Generator, n: int, frac: float) -> None:
    matrix = rng.standard_normal((n, 777)).astype(np.float32)
    stack = stack_of(matrix)

    got = trimmed_mean(stack, list(range(n)), trim_frac=frac, block_columns=64)

    expected = trim_mean(matrix.astype(np.float64), frac, axis=0)
    # a float32 sum of at most n kept values: error <= n u sum|x| <= n u n max|x|
    bound = n * 2.0**-24 * np.abs(matrix).max(axis=0) * 2
    assert np.all(np.abs(got - expected) <= bound)


def test_trim_count_is_not_fooled_by_binary_rounding(rng: np.random.Generator) -> None:
    # 0.29 * 100 is 28.999999999999996 in binary; the rule drops 29 at each end.
    matrix = rng.standard_normal((100, 50)).astype(np.float32)
    stack = stack_of(matrix)

    got = trimmed_mean(stack, range(100), trim_frac=0.29)

    expected = np.sort(matrix.astype(np.float64), axis=0)[29:71].mean(axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def krum_reference(matrix: np.ndarray, f: int, m: int) -> list[int]:
    n = matrix.shape[0]
    x = matrix.astype(np.float64)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: n - f - 2]))
    return sorted(range(n), key=lambda i: (scores[i], i))[:m]


@pytest.mark.parametrize(("n", "f", "m"), [(5, 1, 1), (9, 2, 1), (9, 2, 4), (12, 3, 9)])
def test_krum_selection_matches_brute_force(
    rng: np.random.Generator, n: int, f: int, m: int
) -> None:
    matrix = rng.standard_normal((n, 200)).astype(np.float32) * rng.uniform(0.5, 3, (n, 1))
    stack = stack_of(matrix.astype(np.float32))

    chosen = krum_selection(stack, range(n), num_byzantine=f, multi=m, block_columns=33)

    assert chosen.tolist() == krum_reference(matrix, f, m)


def test_distances_survive_a_large_common_offset(rng: np.random.Generator) -> None:
    # Norms ~1e11, distances ~0.2: a float32 Gram matrix would be pure rounding noise and
    # an uncentred float64 one keeps about 3 digits; centring each block keeps them all.
    matrix = (1e4 + 1e-2 * rng.standard_normal((6, 1000))).astype(np.float32)
    stack = stack_of(matrix)
    x = matrix.astype(np.float64)
    exact = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)

    got = pairwise_sq_distances(stack, range(6), block_columns=128)

    np.testing.assert_allclose(got, exact, rtol=1e-9)


def honest_and_outliers(
    rng: np.random.Generator, honest: int, outliers: int, p: int, distance: float
) -> np.ndarray:
    center = rng.standard_normal(p)
    good = center + 0.05 * rng.standard_normal((honest, p))
    bad = center + distance * rng.standard_normal((outliers, p))
    return np.vstack([bad[: outliers // 2], good, bad[outliers // 2 :]]).astype(np.float32)


def test_krum_picks_the_honest_cluster(rng: np.random.Generator) -> None:
    matrix = honest_and_outliers(rng, honest=7, outliers=2, p=500, distance=100.0)
    honest_rows = set(range(1, 8))
    stack = stack_of(matrix)

    one = krum(stack, range(9), np.arange(1.0, 10.0), num_byzantine=2)
    chosen = krum_selection(stack, range(9), num_byzantine=2, multi=5)
    several = krum(stack, range(9), num_byzantine=2, multi=5)

    assert any(np.array_equal(one, matrix[r]) for r in honest_rows)
    assert set(chosen.tolist()) <= honest_rows
    np.testing.assert_allclose(several, matrix[chosen].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_robust_rules_resist_a_scaled_up_poisoned_fifth(rng: np.random.Generator) -> None:
    p, n = 4000, 10
    truth = rng.standard_normal(p)
    honest = truth + 0.1 * rng.standard_normal((8, p))
    poisoned = -30.0 * (truth + 0.1 * rng.standard_normal((2, p)))  # 20 %, scaled up
    matrix = np.vstack([honest[:3], poisoned[:1], honest[3:], poisoned[1:]]).astype(np.float32)
    weights = np.full(n, 100.0)
    weights[[3, 9]] = 1000.0  # the attackers also claim more data
    stack = stack_of(matrix)

    def error(result: np.ndarray) -> float:
        return float(np.linalg.norm(result - truth) / np.linalg.norm(truth))

    assert error(fedavg(stack, range(n), weights)) > 10.0
    assert error(coordinate_median(stack, range(n), weights)) < 0.15
    assert error(trimmed_mean(stack, range(n), weights, trim_frac=0.2)) < 0.15
    assert error(krum(stack, range(n), weights, num_byzantine=2)) < 0.15
    assert error(krum(stack, range(n), weights, num_byzantine=2, multi=6)) < 0.15


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda s: trimmed_mean(s, range(6), trim_frac=0.5), r"trim_frac must be in \[0.0, 0.5\)"),
        (lambda s: trimmed_mean(s, range(6), trim_frac=-0.1), "trim_frac"),
        (lambda s: trimmed_mean(s, range(6), trim_frac="0.2"), "trim_frac must be a number"),
        (lambda s: krum(s, range(6), num_byzantine=2), "at least 7 updates"),
        (lambda s: krum(s, range(6), num_byzantine=-1), "num_byzantine must be >= 0"),
        (lambda s: krum(s, range(6), num_byzantine=1.0), "num_byzantine must be an integer"),
        (lambda s: krum(s, range(6), multi=0), "multi must be >= 1"),
        (lambda s: krum(s, range(6), multi=6), "exceeds n - num_byzantine = 5"),
        (lambda s: coordinate_median(s, []), "no rows"),
        (lambda s: coordinate_median(s, range(6), [1.0]), "got 1 weights for 6 rows"),
        (lambda s: krum(s, range(6), [1, 1, 1, 1, 1, -1]), ">= 0"),
        (lambda s: coordinate_median(s, range(6), block_columns=0), "block_columns"),
    ],
)
def test_bad_knobs_and_inputs(call: object, problem: str) -> None:
    stack = stack_of(np.ones((6, 10), np.float32))

    with pytest.raises(AggregationError, match=problem):
        call(stack)  # type: ignore[operator]
