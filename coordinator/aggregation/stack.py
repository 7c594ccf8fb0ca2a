"""UpdateStack: the preallocated (capacity, P) float32 buffer updates are decoded into.

Row ``k`` holds the delta of update ``k`` from the global model. The coordinator decodes
a payload straight into :meth:`UpdateStack.row` (or hands a decoded array to
:meth:`UpdateStack.put_dense` / :meth:`UpdateStack.put_sparse`), and the aggregators read
the rows in place: no per-round allocation, no (K, P) copy at aggregation time.

The stack remembers which rows were handed out or written since the last :meth:`reset`,
so an aggregator asked for a row left over from an earlier round fails loudly instead of
averaging stale data in.
"""

from __future__ import annotations

import numpy as np

from coordinator.aggregation.errors import AggregationError


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AggregationError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise AggregationError(f"{name} must be at least 1, got {value}")
    return int(value)


class UpdateStack:
    """Preallocated (capacity, P) float32 stack; row k holds update k's delta.

    ``np.empty`` maps memory lazily, so rows that are never written cost address space,
    not RAM: size ``capacity`` for the most updates a round may keep (K times the
    overcommitment) without paying for the ones that never arrive.
    """

    num_params: int

    def __init__(self, num_params: int, capacity: int) -> None:
        self.num_params = _positive_int("num_params", num_params)
        self._buf = np.empty((_positive_int("capacity", capacity), self.num_params), np.float32)
        self._written = np.zeros(self._buf.shape[0], dtype=bool)

    @property
    def capacity(self) -> int:
        return int(self._buf.shape[0])

    @property
    def array(self) -> np.ndarray:
        """Read-only view of the whole (capacity, P) buffer, for the aggregators."""
        view = self._buf.view()
        view.flags.writeable = False
        return view

    @property
    def written(self) -> np.ndarray:
        """Read-only (capacity,) mask of the rows handed out or written since reset()."""
        view = self._written.view()
        view.flags.writeable = False
        return view

    def _index(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise AggregationError(f"row index must be an integer, got {k!r}")
        if not 0 <= k < self.capacity:
            raise AggregationError(f"row {k} is outside the stack (capacity {self.capacity})")
        return int(k)

    def row(self, k: int) -> np.ndarray:
        """Writable (P,) view of row k, to decode straight into; marks the row written.

        The caller must then fill every coordinate. A view taken before :meth:`grow`
        points at the old buffer: take views after growing.
        """
        k = self._index(k)
        self._written[k] = True
        result: np.ndarray = self._buf[k]
        return result

    def put_dense(self, k: int, delta: np.ndarray) -> None:
        """Copy a dense (P,) delta of any float dtype into row k."""
        k = self._index(k)
        delta = np.asarray(delta)
        if delta.dtype.kind != "f":
            raise AggregationError(f"dense delta must be floating point, got dtype {delta.dtype}")
        if delta.shape != (self.num_params,):
            raise AggregationError(
                f"dense delta has shape {delta.shape}, the stack holds ({self.num_params},)"
            )
        np.copyto(self._buf[k], delta, casting="same_kind")
        self._written[k] = True

    def put_sparse(self, k: int, indices: np.ndarray, values: np.ndarray) -> None:
        """Write a top-k sparse delta into row k: zero everywhere but ``indices``.

        A coordinate the sender left out is a ZERO delta, not a missing one. Top-k
        compression approximates the delta by zero outside the k largest entries (error
        feedback, if any, stays on the agent), so the row holds exactly the delta the
        agent chose to send, and FedAvg over compressed and dense rows alike is the
        weighted mean of the deltas as sent. Averaging each coordinate only over the
        agents that sent it would instead inflate small, rarely-sent coordinates.

        Indices must be distinct and in [0, P); they are checked before the row is
        touched, so a rejected update leaves the row as it was.
        """
        k = self._index(k)
        indices = np.asarray(indices)
        values = np.asarray(values)
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise AggregationError(
                f"sparse indices must be a 1-D integer array, got {indices.dtype} {indices.shape}"
            )
        if values.ndim != 1 or values.dtype.kind != "f":
            raise AggregationError(
                f"sparse values must be a 1-D float array, got {values.dtype} {values.shape}"
            )
        if indices.size != values.size:
            raise AggregationError(f"{indices.size} sparse indices but {values.size} values")
        if indices.size:
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= self.num_params:
                raise AggregationError(
                    f"sparse index out of range [0, {self.num_params}): min {lo}, max {hi}"
                )
            # Encoders send indices sorted; that check is O(k). Unsorted input pays a sort.
            ordered = indices.size < 2 or bool(np.all(indices[1:] > indices[:-1]))
            if not ordered and np.unique(indices).size != indices.size:
                raise AggregationError("sparse indices repeat a coordinate")
        target = self._buf[k]
        target.fill(0.0)
        target[indices] = values
        self._written[k] = True

    def grow(self, capacity: int) -> None:
        """Make room for at least ``capacity`` rows, keeping the rows written so far.

        Never shrinks; a no-op when the stack is already big enough. Views from
        :meth:`row` taken before growing do not see the new buffer.
        """
        capacity = _positive_int("capacity", capacity)
        if capacity <= self.capacity:
            return
        old, kept = self._buf, np.flatnonzero(self._written)
        self._buf = np.empty((capacity, self.num_params), np.float32)
        for k in kept:
            self._buf[k] = old[k]
        written = np.zeros(capacity, dtype=bool)
        written[kept] = True
        self._written = written

    def reset(self) -> None:
        """Start a new round in the same memory: forget which rows were written.

        Nothing is zeroed: every put_* and a decode into row() overwrite the whole row.
        """
        self._written.fill(False)
