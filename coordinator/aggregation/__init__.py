"""Aggregation: turn the K kept updates of a round into one delta. Pure numpy, no I/O.

Models travel as one flat float32 vector of P parameters, and each update as a delta
from the global model it was trained on, dense or top-k sparse. The pieces:

``UpdateStack``
    A (capacity, P) float32 buffer allocated once per job and reused every round
    (``reset()``); updates are decoded straight into its rows. Why preallocate: with
    P = 11.7 M a row is 47 MB, and K fresh rows per round would mean K allocations,
    page faults on every one, and a final ``np.stack`` copy of the whole (K, P) matrix
    before any arithmetic. With the rows already side by side in one C-contiguous
    matrix, FedAvg is a single BLAS sgemv that reads each row once (DESIGN principle 6).
    A top-k sparse update is scattered into a zeroed row: a coordinate it leaves out is
    a zero delta, because top-k compression *approximates* the delta by zero there; so
    FedAvg of compressed and dense updates is the weighted mean of the approximated
    deltas, the quantity the compression analysis is about.

``fedavg``
    Weighted mean, one sgemv over the kept rows (see ``mean``).

``coordinate_median``, ``trimmed_mean``, ``krum``
    Byzantine-robust rules, unweighted, column-blocked so memory stays O(K x block)
    for any P (see ``robust`` and ``_order``).

``AGGREGATORS`` / ``aggregate``
    The explicit registry by config name ("fedavg", "median", "trimmed_mean", "krum")
    and the single entry point, which rejects unknown names and knobs.

The stack's rows must hold finite values: payload admission rejects NaN and Inf before
a row is used (``coordinator.update_check``), so the aggregators do not pay another pass.

Errors::

    ValueError
     └── AggregationError   the caller's fault: unknown name or knob, bad knob value,
                            empty / duplicate / out-of-range / unwritten rows, bad weights,
                            an update that does not fit the stack
"""

from __future__ import annotations

from coordinator.aggregation.errors import AggregationError
from coordinator.aggregation.mean import fedavg
from coordinator.aggregation.robust import (
    coordinate_median,
    krum,
    krum_selection,
    pairwise_sq_distances,
    trimmed_mean,
)
from coordinator.aggregation.rules import AGGREGATORS, aggregate, check_knobs, knob_names
from coordinator.aggregation.stack import UpdateStack

__all__ = [
    "AGGREGATORS",
    "AggregationError",
    "UpdateStack",
    "aggregate",
    "check_knobs",
    "coordinate_median",
    "fedavg",
    "knob_names",
    "krum",
    "krum_selection",
    "pairwise_sq_distances",
    "trimmed_mean",
]
