"""Input checks shared by every aggregator, and the column-block sizing rule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from coordinator.aggregation.errors import AggregationError
from coordinator.aggregation.stack import UpdateStack

Rows = Sequence[int] | np.ndarray
Weights = Sequence[float] | np.ndarray


def check_rows(stack: UpdateStack, rows: Rows) -> np.ndarray:
    """Rows as an int64 array: non-empty, distinct, in range, written since reset()."""
    idx = np.asarray(rows)
    if idx.size == 0:
        raise AggregationError("no rows to aggregate: at least one update is needed")
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise AggregationError(
            f"rows must be a 1-D sequence of integers, got {idx.dtype} of shape {idx.shape}"
        )
    idx = idx.astype(np.int64, copy=False)
    bad = idx[(idx < 0) | (idx >= stack.capacity)]
    if bad.size:
        raise AggregationError(
            f"row {int(bad[0])} is outside the stack (capacity {stack.capacity})"
        )
    uniq, counts = np.unique(idx, return_counts=True)
    if uniq.size != idx.size:
        raise AggregationError(f"row {int(uniq[counts > 1][0])} is listed more than once")
    stale = idx[~stack.written[idx]]
    if stale.size:
        raise AggregationError(f"row {int(stale[0])} was not written since the last reset()")
    return idx


def check_weights(weights: Weights, count: int) -> np.ndarray:
    """Weights as float64 normalised to sum 1: one per row, finite, >= 0, positive sum."""
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AggregationError(f"weights must be numbers: {exc}") from exc
    if w.ndim != 1 or w.size != count:
        raise AggregationError(f"got {w.size} weights for {count} rows")
    if not np.all(np.isfinite(w)):
        raise AggregationError("weights must be finite")
    if np.any(w < 0):
        raise AggregationError(f"weights must be >= 0, got {float(w.min())}")
    top = float(w.max())
    if top <= 0:
        raise AggregationError("weights sum to zero")
    w = w / top  # keeps the sum finite even for weights near float64's largest
    result: np.ndarray = w / w.sum()
    return result


def check_out(stack: UpdateStack, out: np.ndarray | None) -> np.ndarray:
    """The caller's output buffer, or a new one: float32 (P,), contiguous, apart from the stack."""
    if out is None:
        return np.empty(stack.num_params, dtype=np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32:
        raise AggregationError("out must be a float32 numpy array")
    if out.shape != (stack.num_params,) or not out.flags.c_contiguous or not out.flags.writeable:
        raise AggregationError(
            f"out must be a writable contiguous ({stack.num_params},) array, got {out.shape}"
        )
    if np.may_share_memory(out, stack.array):
        raise AggregationError("out must not share memory with the stack")
    return out


def int_knob(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AggregationError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise AggregationError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def float_knob(name: str, value: object, low: float, high: float) -> float:
    """A float in [low, high)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise AggregationError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and low <= number < high):
        raise AggregationError(f"{name} must be in [{low}, {high}), got {value}")
    return number


def columns_for(
    num_params: int, rows: int, itemsize: int, budget_bytes: int, requested: int | None
) -> int:
    """Columns per block so that a (rows, block) scratch of ``itemsize`` fits the budget."""
    if requested is not None:
        return min(int_knob("block_columns", requested, 1), num_params)
    return max(1, min(num_params, max(1024, budget_bytes // (rows * itemsize))))
