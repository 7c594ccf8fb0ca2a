"""Byzantine-robust aggregators: coordinate-wise median, trimmed mean, (multi-)Krum.

All three are unweighted: they accept the FedAvg weights so every aggregator has one
signature, check them, and ignore them. Sample counts are reported by the agents and
cannot be verified, and a robust rule that let one agent claim a billion examples would
hand that agent the result.

Median and trimmed mean work one column block at a time (see ``_order``), so memory is
O(K x block) whatever P is. Krum needs all pairwise squared distances; they come from
the Gram matrix, ||a||^2 + ||b||^2 - 2 a.b (clamped at 0), accumulated in float64 over
column blocks (one BLAS call a block), each block centred on its mean first, so that
cancellation between large norms cannot swamp small honest-to-honest distances (in
float32 a common offset of 1e4 over 1000 coordinates leaves no correct digit).
"""

from __future__ import annotations

import math

import numpy as np

from coordinator.aggregation._inputs import (
    Rows,
    Weights,
    check_out,
    check_rows,
    check_weights,
    columns_for,
    float_knob,
    int_knob,
)
from coordinator.aggregation._order import sorted_blocks
from coordinator.aggregation.errors import AggregationError
from coordinator.aggregation.mean import weighted_sum
from coordinator.aggregation.stack import UpdateStack

# float64 scratch for the Gram blocks: a few MiB keeps the BLAS calls large and few.
GRAM_BYTES = 8 << 20


def _rows_and_weights(stack: UpdateStack, rows: Rows, weights: Weights | None) -> np.ndarray:
    idx = check_rows(stack, rows)
    if weights is not None:
        check_weights(weights, idx.size)
    return idx


def coordinate_median(
    stack: UpdateStack,
    rows: Rows,
    weights: Weights | None = None,
    *,
    out: np.ndarray | None = None,
    block_columns: int | None = None,
) -> np.ndarray:
    """Unweighted coordinate-wise median; the mean of the two middle values when K is even."""
    idx = _rows_and_weights(stack, rows, weights)
    res = check_out(stack, out)
    n = idx.size
    middle = frozenset({(n - 1) // 2, n // 2})
    for block in sorted_blocks(stack.array, idx, middle, block_columns):
        target = res[block.c0 : block.c1]
        if n % 2:
            np.copyto(target, block.at(n // 2))
        else:
            # Halving first is exact and cannot overflow; one rounding, as in (a + b) / 2.
            np.multiply(block.at(n // 2 - 1), np.float32(0.5), out=target)
            target += np.float32(0.5) * block.at(n // 2)
    return res


def trim_count(n: int, trim_frac: float) -> int:
    """Updates dropped at each end: floor(trim_frac * n), immune to binary rounding
    (0.29 of 100 drops 29, not 28)."""
    return math.floor(trim_frac * n + 1e-9)


def trimmed_mean(
    stack: UpdateStack,
    rows: Rows,
    weights: Weights | None = None,
    *,
    trim_frac: float = 0.2,
    out: np.ndarray | None = None,
    block_columns: int | None = None,
) -> np.ndarray:
    """Per coordinate, drop the floor(trim_frac * K) smallest and largest values and
    average the rest (unweighted). trim_frac in [0, 0.5); 0 is the plain mean."""
    frac = float_knob("trim_frac", trim_frac, 0.0, 0.5)
    idx = _rows_and_weights(stack, rows, weights)
    res = check_out(stack, out)
    n = idx.size
    t = trim_count(n, frac)
    keep = frozenset(range(t, n - t))
    for block in sorted_blocks(stack.array, idx, keep, block_columns):
        target = res[block.c0 : block.c1]
        block.sum_range(t, n - t, target)
        target /= np.float32(n - 2 * t)
    return res


def pairwise_sq_distances(
    stack: UpdateStack, rows: Rows, block_columns: int | None = None
) -> np.ndarray:
    """(n, n) float64 squared Euclidean distances between ``rows``, in their order."""
    idx = check_rows(stack, rows)
    n, num_params, data = idx.size, stack.num_params, stack.array
    width = columns_for(num_params, n, 8, GRAM_BYTES, block_columns)
    scratch = np.empty((n, width), dtype=np.float64)
    gram = np.zeros((n, n), dtype=np.float64)
    for c0 in range(0, num_params, width):
        c1 = min(c0 + width, num_params)
        block = scratch[:, : c1 - c0]
        for i, r in enumerate(idx):
            block[i] = data[r, c0:c1]
        # Distances ignore a common shift; removing the block mean keeps the norms, and
        # so the cancellation in ||a||^2 + ||b||^2 - 2 a.b, at the scale of the spread.
        block -= block.mean(axis=0)
        gram += block @ block.T
    sq = np.diag(gram).copy()
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def _krum_knobs(n: int, num_byzantine: int, multi: int) -> tuple[int, int]:
    f = int_knob("num_byzantine", num_byzantine, 0)
    m = int_knob("multi", multi, 1)
    if n < 2 * f + 3:
        raise AggregationError(
            f"krum with num_byzantine={f} needs at least {2 * f + 3} updates (n > 2f + 2), got {n}"
        )
    if m > n - f:
        raise AggregationError(f"krum multi={m} exceeds n - num_byzantine = {n - f}")
    return f, m


def krum_selection(
    stack: UpdateStack,
    rows: Rows,
    *,
    num_byzantine: int = 1,
    multi: int = 1,
    block_columns: int | None = None,
) -> np.ndarray:
    """The stack rows (multi-)Krum keeps, best score first.

    Score of update i = sum of its squared distances to its n - f - 2 nearest other
    updates (Blanchard et al. 2017); ties go to the earlier position in ``rows``.
    """
    idx = check_rows(stack, rows)
    f, m = _krum_knobs(idx.size, num_byzantine, multi)
    dist = pairwise_sq_distances(stack, idx, block_columns)
    np.fill_diagonal(dist, np.inf)
    nearest = np.sort(dist, axis=1)[:, : idx.size - f - 2]
    scores = nearest.sum(axis=1)
    return idx[np.argsort(scores, kind="stable")[:m]]


def krum(
    stack: UpdateStack,
    rows: Rows,
    weights: Weights | None = None,
    *,
    num_byzantine: int = 1,
    multi: int = 1,
    out: np.ndarray | None = None,
    block_columns: int | None = None,
) -> np.ndarray:
    """(Multi-)Krum: the unweighted mean of the ``multi`` best-scored updates.

    Needs n >= 2 * num_byzantine + 3 updates and 1 <= multi <= n - num_byzantine;
    multi=1 is Krum (one update, returned as is).
    """
    idx = _rows_and_weights(stack, rows, weights)
    chosen = krum_selection(
        stack, idx, num_byzantine=num_byzantine, multi=multi, block_columns=block_columns
    )
    uniform = np.full(chosen.size, 1.0 / chosen.size)
    return weighted_sum(stack, chosen, uniform, out=out)
