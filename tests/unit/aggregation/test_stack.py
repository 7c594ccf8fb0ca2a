"""UpdateStack: dense and sparse writes, growth, reuse, and the checks that protect rows."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.aggregation import AggregationError, UpdateStack


def test_put_dense_casts_any_float_dtype(rng: np.random.Generator) -> None:
    stack = UpdateStack(50, 3)
    d64 = rng.standard_normal(50)
    d16 = rng.standard_normal(50).astype(np.float16)

    stack.put_dense(0, d64)
    stack.put_dense(2, d16)

    assert stack.array.dtype == np.float32
    np.testing.assert_array_equal(stack.array[0], d64.astype(np.float32))
    np.testing.assert_array_equal(stack.array[2], d16.astype(np.float32))
    assert stack.written.tolist() == [True, False, True]


def test_row_is_a_writable_view_and_marks_written() -> None:
    stack = UpdateStack(4, 2)

    row = stack.row(1)
    row[:] = [1, 2, 3, 4]

    np.testing.assert_array_equal(stack.array[1], [1, 2, 3, 4])
    assert stack.written.tolist() == [False, True]
    assert not stack.array.flags.writeable


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("value_dtype", [np.float32, np.float16])
def test_put_sparse_zeroes_missing_coordinates(index_dtype: type, value_dtype: type) -> None:
    stack = UpdateStack(8, 1)
    stack.put_dense(0, np.full(8, 7.0))  # stale data from an earlier round

    stack.put_sparse(0, np.array([6, 1], index_dtype), np.array([0.5, -2.0], value_dtype))

    np.testing.assert_array_equal(stack.array[0], [0, -2.0, 0, 0, 0, 0, 0.5, 0])


def test_put_sparse_with_no_entries_is_a_zero_delta() -> None:
    stack = UpdateStack(5, 1)
    stack.put_dense(0, np.ones(5))

    stack.put_sparse(0, np.array([], np.int64), np.array([], np.float32))

    np.testing.assert_array_equal(stack.array[0], np.zeros(5))


@pytest.mark.parametrize(
    ("indices", "values", "problem"),
    [
        (np.array([0, 8]), np.ones(2, np.float32), "out of range"),
        (np.array([-1, 2]), np.ones(2, np.float32), "out of range"),
        (np.array([3, 1, 3]), np.ones(3, np.float32), "repeat"),
        (np.array([1, 2]), np.ones(3, np.float32), "2 sparse indices but 3 values"),
        (np.array([1.0, 2.0]), np.ones(2, np.float32), "integer"),
        (np.array([1, 2]), np.ones(2, np.int32), "float"),
    ],
)
def test_bad_sparse_update_is_rejected_and_changes_nothing(
    indices: np.ndarray, values: np.ndarray, problem: str
) -> None:
    stack = UpdateStack(8, 2)
    stack.put_dense(0, np.arange(8.0))

    with pytest.raises(AggregationError, match=problem):
        stack.put_sparse(0, indices, values)
    with pytest.raises(AggregationError, match=problem):
        stack.put_sparse(1, indices, values)

    np.testing.assert_array_equal(stack.array[0], np.arange(8.0))
    assert stack.written.tolist() == [True, False]


@pytest.mark.parametrize(
    ("delta", "problem"),
    [
        (np.ones(7), "shape"),
        (np.ones((2, 4)), "shape"),
        (np.ones(8, np.int64), "floating point"),
    ],
)
def test_bad_dense_update_is_rejected(delta: np.ndarray, problem: str) -> None:
    stack = UpdateStack(8, 1)

    with pytest.raises(AggregationError, match=problem):
        stack.put_dense(0, delta)

    assert not stack.written[0]


@pytest.mark.parametrize("k", [-1, 3, True, 1.0])
def test_row_index_must_be_in_range(k: object) -> None:
    stack = UpdateStack(4, 3)

    with pytest.raises(AggregationError, match="row"):
        stack.row(k)  # type: ignore[arg-type]


@pytest.mark.parametrize(("num_params", "capacity"), [(0, 1), (1, 0), (2.5, 1)])
def test_constructor_rejects_bad_sizes(num_params: object, capacity: object) -> None:
    with pytest.raises(AggregationError):
        UpdateStack(num_params, capacity)  # type: ignore[arg-type]


def test_grow_keeps_written_rows(rng: np.random.Generator) -> None:
    stack = UpdateStack(30, 2)
    rows = rng.standard_normal((2, 30)).astype(np.float32)
    stack.put_dense(0, rows[0])
    stack.put_dense(1, rows[1])

    stack.grow(5)
    stack.put_dense(4, rows[0] * 2)

    assert stack.capacity == 5
    np.testing.assert_array_equal(stack.array[:2], rows)
    np.testing.assert_array_equal(stack.array[4], rows[0] * 2)
    assert stack.written.tolist() == [True, True, False, False, True]


def test_grow_never_shrinks() -> None:
    stack = UpdateStack(3, 4)
    stack.put_dense(3, np.ones(3))

    stack.grow(2)

    assert stack.capacity == 4
    np.testing.assert_array_equal(stack.array[3], np.ones(3))


def test_reset_reuses_memory_and_forgets_rows() -> None:
    stack = UpdateStack(6, 3)
    buffer_before = stack.array.__array_interface__["data"][0]
    stack.put_dense(0, np.ones(6))
    stack.put_sparse(1, np.array([2]), np.array([5.0], np.float32))

    stack.reset()
    stack.put_sparse(0, np.array([4]), np.array([3.0], np.float32))

    assert stack.array.__array_interface__["data"][0] == buffer_before
    assert stack.written.tolist() == [True, False, False]
    np.testing.assert_array_equal(stack.array[0], [0, 0, 0, 0, 3.0, 0])
