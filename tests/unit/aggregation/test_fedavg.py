"""FedAvg against a float64 reference, on every path: contiguous, permuted, gapped, scattered."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.aggregation import AggregationError, UpdateStack, fedavg

from .conftest import stack_of

U = 2.0**-24  # unit roundoff of float32


def reference(matrix: np.ndarray, rows: list[int], weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, np.float64)
    return (w / w.sum()) @ matrix[rows].astype(np.float64)


def assert_fedavg_close(
    got: np.ndarray, matrix: np.ndarray, rows: list[int], weights: np.ndarray
) -> None:
    """Error bound of a float32 weighted sum of K terms against the exact value.

    Rounding the normalised weights to float32 costs u per term, and summing K float32
    products in any order (BLAS blocks and FMAs freely; zero-weight terms add exactly)
    costs at most gamma_K ~ K u relative to sum |w_i x_i|. So
    |got - exact| <= (K + 2) u sum_i w_i |x_i|, elementwise, with u = 2**-24.
    """
    w = np.asarray(weights, np.float64) / np.sum(weights)
    bound = (len(rows) + 2) * U * (w @ np.abs(matrix[rows].astype(np.float64)))
    err = np.abs(got.astype(np.float64) - reference(matrix, rows, weights))
    assert got.dtype == np.float32
    assert np.all(err <= bound), f"max excess {np.max(err - bound)}"


@pytest.mark.parametrize("k", [1, 2, 10, 33])
def test_contiguous_rows_match_float64_reference(rng: np.random.Generator, k: int) -> None:
    matrix = rng.standard_normal((k, 1001)).astype(np.float32) * 10.0 ** rng.integers(-3, 3, k)[
        :, None
    ].astype(np.float32)
    weights = rng.integers(1, 600, k).astype(float)
    stack = stack_of(matrix)

    got = fedavg(stack, list(range(k)), weights)

    assert_fedavg_close(got, matrix, list(range(k)), weights)


def test_weights_are_normalised(rng: np.random.Generator) -> None:
    matrix = rng.standard_normal((5, 300)).astype(np.float32)
    stack = stack_of(matrix)
    rows = [0, 1, 2, 3, 4]
    weights = np.array([3.0, 1.0, 0.0, 2.0, 5.0])

    base = fedavg(stack, rows, weights)

    np.testing.assert_array_equal(fedavg(stack, rows, weights * 8.0), base)  # exact in binary
    np.testing.assert_allclose(fedavg(stack, rows, weights * 1e-3), base, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        fedavg(stack, rows, [1.0] * 5), matrix.mean(axis=0), rtol=1e-6, atol=1e-6
    )
    # a zero weight drops the row; huge weights do not overflow the normalisation
    np.testing.assert_allclose(fedavg(stack, [0, 2], [1.0, 0.0]), matrix[0], rtol=0, atol=0)
    np.testing.assert_allclose(
        fedavg(stack, [0, 1], [1e308, 1e308]), matrix[:2].mean(axis=0), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    "rows",
    [
        [4, 2, 3, 0, 1],  # a permutation of a contiguous block: one sgemv
        [7, 1, 3, 2, 5],  # gaps within twice the count: span with zero weights
        [0, 11, 23, 5, 17],  # scattered: blocked gather
        [23],
    ],
)
def test_non_contiguous_rows(rng: np.random.Generator, rows: list[int]) -> None:
    matrix = rng.standard_normal((24, 997)).astype(np.float32)
    weights = rng.uniform(0.5, 2.0, len(rows))
    stack = stack_of(matrix)

    for columns in (None, 64):
        got = fedavg(stack, rows, weights, block_columns=columns)

        assert_fedavg_close(got, matrix, rows, weights)


def test_mixed_sparse_and_dense_rows(rng: np.random.Generator) -> None:
    p = 2000
    stack = UpdateStack(p, 4)
    dense = rng.standard_normal(p).astype(np.float32)
    dense16 = rng.standard_normal(p).astype(np.float16)
    idx32 = np.sort(rng.choice(p, 50, replace=False)).astype(np.int32)
    val16 = rng.standard_normal(50).astype(np.float16)
    idx64 = rng.choice(p, 80, replace=False).astype(np.int64)  # unsorted is accepted
    val32 = rng.standard_normal(80).astype(np.float32)
    stack.put_dense(0, dense)
    stack.put_sparse(1, idx32, val16)
    stack.put_dense(2, dense16)
    stack.put_sparse(3, idx64, val32)
    expected = np.zeros((4, p), np.float32)
    expected[0] = dense
    expected[1, idx32] = val16.astype(np.float32)
    expected[2] = dense16.astype(np.float32)
    expected[3, idx64] = val32
    weights = np.array([100.0, 30.0, 55.0, 5.0])

    got = fedavg(stack, [0, 1, 2, 3], weights)

    np.testing.assert_array_equal(stack.array, expected)
    assert_fedavg_close(got, expected, [0, 1, 2, 3], weights)


def test_grow_and_reset_keep_aggregates_right(rng: np.random.Generator) -> None:
    matrix = rng.standard_normal((6, 400)).astype(np.float32)
    stack = stack_of(matrix[:2])
    stack.grow(6)
    for k in range(2, 6):
        stack.put_dense(k, matrix[k])
    weights = np.arange(1.0, 7.0)

    assert_fedavg_close(fedavg(stack, range(6), weights), matrix, list(range(6)), weights)

    stack.reset()
    stack.put_dense(0, matrix[5])
    stack.put_dense(1, matrix[4])
    assert_fedavg_close(fedavg(stack, [0, 1], [1.0, 3.0]), matrix, [5, 4], np.array([1.0, 3.0]))
    with pytest.raises(AggregationError, match="row 2 was not written"):
        fedavg(stack, [0, 1, 2], [1.0, 1.0, 1.0])


def test_out_buffer_is_filled_and_returned(rng: np.random.Generator) -> None:
    matrix = rng.standard_normal((3, 100)).astype(np.float32)
    stack = stack_of(matrix)
    out = np.full(100, np.nan, np.float32)

    got = fedavg(stack, [0, 1, 2], [1, 1, 2], out=out)

    assert got is out
    assert_fedavg_close(out, matrix, [0, 1, 2], np.array([1.0, 1.0, 2.0]))


@pytest.mark.parametrize(
    "out",
    [np.empty(100, np.float64), np.empty(99, np.float32), np.empty(200, np.float32)[::2]],
)
def test_bad_out_buffer(rng: np.random.Generator, out: np.ndarray) -> None:
    stack = stack_of(rng.standard_normal((2, 100)).astype(np.float32))

    with pytest.raises(AggregationError, match="out must"):
        fedavg(stack, [0, 1], [1, 1], out=out)


@pytest.mark.parametrize(
    ("rows", "weights", "problem"),
    [
        ([], [], "no rows"),
        ([0, 3], [1, 1], "row 3 is outside"),
        ([-1], [1], "row -1 is outside"),
        ([1, 1], [1, 1], "row 1 is listed more than once"),
        ([0.0, 1.0], [1, 1], "integers"),
        ([0, 1], [1], "got 1 weights for 2 rows"),
        ([0, 1], [1, -1], ">= 0"),
        ([0, 1], [1, np.nan], "finite"),
        ([0, 1], [np.inf, 1], "finite"),
        ([0, 1], [0, 0], "sum to zero"),
        ([0, 1], ["a", "b"], "numbers"),
    ],
)
def test_bad_rows_and_weights(rows: list[float], weights: list[object], problem: str) -> None:
    stack = stack_of(np.ones((3, 4), np.float32))

    with pytest.raises(AggregationError, match=problem):
        fedavg(stack, rows, weights)  # type: ignore[arg-type]


def test_out_buffer_may_not_be_a_stack_row(rng: np.random.Generator) -> None:
    stack = stack_of(rng.standard_normal((3, 100)).astype(np.float32))

    with pytest.raises(AggregationError, match="share memory"):
        fedavg(stack, [0, 1], [1, 1], out=stack.row(2))


def test_rows_never_written_this_round_do_not_reach_the_mean(rng: np.random.Generator) -> None:
    # Prepare: last round left NaN and Inf in rows 1 and 3 (as memory never written may
    # hold anything); this round writes only rows 0, 2 and 4.
    matrix = rng.standard_normal((5, 300)).astype(np.float32)
    stack = UpdateStack(300, 5)
    stack.row(1)[:] = np.nan
    stack.row(3)[:] = np.inf
    stack.reset()
    for k in (0, 2, 4):
        stack.put_dense(k, matrix[k])
    weights = [1.0, 2.0, 3.0]
    # Execute: the kept rows span rows 1 and 3 (within twice their count).
    got = fedavg(stack, [0, 2, 4], weights)
    # Assert: finite, and the weighted mean of exactly the kept rows.
    assert np.isfinite(got).all()
    assert_fedavg_close(got, matrix, [0, 2, 4], weights)
