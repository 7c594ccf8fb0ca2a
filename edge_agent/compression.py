"""Top-k sparsification by magnitude of a flat model delta (pure numpy, no I/O).

The edge agent uploads the ``k = max(1, round(keep_frac * P))`` entries of the flat
delta (``fedbus.protocol.params`` layout) with the largest absolute value, as a real
sparse payload: ascending indices plus their values (ALGORITHMS §0, PyramidFL and
adaptive training). Decisions:

* **One sparse type.** :data:`SparseDelta` *is* ``fedbus.protocol.codec.SparseTensor``
  (``size``, ``indices``, ``values``), so what :func:`sparsify` returns goes straight into
  ``codec.encode`` and what ``codec.decode`` returns goes straight into :func:`densify`.
* **Selection is O(P) and deterministic.** The k-th largest magnitude is found with
  ``np.partition`` (introselect, O(P)); every entry strictly above it is kept, and the
  remaining slots go to the entries *equal* to it with the lowest indices. Ties therefore
  break by index, the same on every platform and numpy version (``np.argpartition``
  leaves them to the selection algorithm), and the result comes out of ``np.flatnonzero``
  already sorted, so there is no O(k log k) sort.
* **keep_frac >= 1 means dense.** :func:`topk_indices` then returns ``arange(P)`` (always
  an array, never ``None``, so callers need no special case); the agent should send the
  dense delta instead, and :func:`wire_bytes` prices it as dense. :func:`is_dense` is the
  one place that rule lives.
* **Index dtype.** int32 when ``P < 2**31`` (every index fits), int64 otherwise; both
  are allowed index dtypes of the codec.
* **Non-finite deltas are refused** by :func:`topk_indices` / :func:`sparsify`
  (``ValueError``): a NaN would otherwise sort as the largest magnitude and be uploaded.
  :func:`topk_norm`, which runs after every phase-2 step, skips that extra pass: any NaN or
  inf lands in the top k and makes the norm non-finite, which the budget planner treats
  as a failed update.
* **Sparse is not always smaller.** Per kept entry a sparse payload costs index + value
  bytes, so with int32 indices it beats a dense payload of the same value dtype only for
  ``keep_frac < v / (i + v)``: 0.5 for float32 values, 1/3 for float16.
  :func:`wire_bytes` prices exactly what is sent (sparse below 1, dense at 1), so the
  upload time is non-decreasing on ``[min_payload_frac, 1)`` and may drop at 1; the
  budget planner is written for that shape and never picks a sparse fraction whose
  payload is larger than the dense one it could afford.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedbus.protocol.codec import SparseTensor
from fedbus.protocol.formulas import (
    check_keep_frac,
    effective_keep,
    float_dtype,
    index_dtype,
    is_dense,
    kept_count,
    upload_bytes,
    wire_bytes,
)

__all__ = [
    "SparseDelta",
    "densify",
    "effective_keep",
    "index_dtype",
    "is_dense",
    "kept_count",
    "sparsify",
    "topk_indices",
    "topk_norm",
    "upload_bytes",
    "wire_bytes",
]

SparseDelta = SparseTensor
"""A flat vector of ``size`` elements, zero except at ascending ``indices``."""

# The pricing half (k, index dtype, wire bytes) is shared with the coordinator: it lives in
# fedbus.protocol.formulas and is re-exported here under its old names.
_check_keep_frac = check_keep_frac
_value_dtype = float_dtype


def topk_indices(delta: np.ndarray, keep_frac: float) -> np.ndarray:
    """Ascending indices of the k largest ``|delta|`` entries (ties: lowest index first).

    ``keep_frac >= 1`` (or k == P) returns ``arange(P)``. Raises ``ValueError`` for a
    delta that is not a non-empty 1-d float array of finite values.
    """
    flat = _check_delta(delta)
    if not np.isfinite(flat).all():
        raise ValueError("delta contains NaN or inf; refusing to select from it")
    p = flat.size
    k = kept_count(p, keep_frac)
    idx_dtype = index_dtype(p)
    if k == p:
        return np.arange(p, dtype=idx_dtype)
    magnitude = np.abs(flat)
    threshold = np.partition(magnitude, p - k)[p - k]
    mask = magnitude > threshold
    missing = k - int(np.count_nonzero(mask))
    if missing > 0:
        mask[np.flatnonzero(magnitude == threshold)[:missing]] = True
    return np.flatnonzero(mask).astype(idx_dtype, copy=False)


def sparsify(
    delta: np.ndarray, keep_frac: float, value_dtype: npt.DTypeLike = np.float32
) -> SparseDelta:
    """The top-k entries of ``delta`` as a :data:`SparseDelta` with ``value_dtype`` values.

    Raises ``ValueError`` if a value does not fit ``value_dtype`` (|x| > 65504 for
    float16) rather than sending inf.
    """
    vdt = _value_dtype(value_dtype)
    indices = topk_indices(delta, keep_frac)
    with np.errstate(over="ignore"):  # checked just below
        values = np.ascontiguousarray(delta[indices], dtype=vdt)
    if not np.isfinite(values).all():
        raise ValueError(f"delta values overflow {vdt}")
    indices.setflags(write=False)
    values.setflags(write=False)
    return SparseDelta(size=int(delta.size), indices=indices, values=values)


def densify(sparse: SparseDelta, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    """The dense ``size``-vector of a sparse delta (zeros elsewhere).

    Checks that the indices are integers, strictly ascending and within ``[0, size)``
    (O(k)): duplicate or negative indices would otherwise be written silently.
    """
    indices, values = np.asarray(sparse.indices), np.asarray(sparse.values)
    if indices.dtype.kind not in "iu":
        raise ValueError(f"sparse indices must be integers, got {indices.dtype}")
    if indices.ndim != 1 or indices.shape != values.shape:
        raise ValueError("sparse indices and values must be 1-d and of the same length")
    size = int(sparse.size)
    if size < 0 or indices.size > size:
        raise ValueError(f"{indices.size} indices do not fit a vector of size {size}")
    if indices.size:
        if indices[0] < 0 or indices[-1] >= size:
            raise ValueError(f"sparse indices out of range [0, {size})")
        if indices.size > 1 and not bool(np.all(indices[1:] > indices[:-1])):
            raise ValueError("sparse indices must be strictly ascending")
    out = np.zeros(size, dtype=_value_dtype(dtype))
    out[indices] = values
    return out


def topk_norm(delta: np.ndarray, keep_frac: float) -> float:
    """2-norm of the top-k entries of ``delta``: ``sqrt`` of the k largest squares.

    O(P): one squaring pass, one ``np.partition`` and a float64 sum of the k kept
    squares (no sort, no index array). Squares are taken in the delta's own dtype.
    NaN or inf in the delta gives a non-finite result (they sort as the largest).
    """
    flat = _check_delta(delta)
    p = flat.size
    k = kept_count(p, keep_frac)
    squares = np.square(flat)
    if k < p:
        squares.partition(p - k)
        squares = squares[p - k :]
    return math.sqrt(float(squares.sum(dtype=np.float64)))


def _check_delta(delta: np.ndarray) -> np.ndarray:
    if not isinstance(delta, np.ndarray) or delta.ndim != 1:
        raise ValueError("delta must be a 1-d numpy array (the flat parameter vector)")
    if delta.dtype.kind != "f":
        raise ValueError(f"delta must be a float array, got {delta.dtype}")
    if delta.size == 0:
        raise ValueError("delta is empty")
    return delta
