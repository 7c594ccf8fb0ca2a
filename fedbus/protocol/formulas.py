"""Numbers the coordinator and the agents must compute alike (pure, no I/O, Python 3.10).

Both sides of the wire price a round the same way: the coordinator plans a virtual round
with the durations the agents will report, so the training seed, the step cap and the
bytes of a top-k upload live here, once, and neither side imports the other.

* :func:`training_seed`: the local SGD seed of one agent in one round.
* :func:`base_steps`, :func:`data_step_cap`, :func:`fixed_steps`,
  :func:`adaptive_max_steps`: PyramidFL's learner step cap ([P]: never more than
  ``max(5 * #batches, E)`` iterations, ``E`` being the job's own local steps).
* :func:`kept_count`, :func:`index_dtype`, :func:`wire_bytes`, :func:`effective_keep`,
  :func:`upload_bytes`: what a top-k sparse (or dense) update costs on the wire.
* :func:`value_dtype_of`: the numpy dtype of a config's ``value_dtype`` name.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from fedbus.protocol.messages import TrainConfig

PASSES_CAP = 5
"""At most this many passes over the local data ([P] learner)."""
MAX_EXTRA_FACTOR = 10
"""Adaptive training: idle time buys at most 10x the job's local steps (the default of a
job's ``max_steps_factor``)."""

_INT32_LIMIT = 2**31


# ---------------------------------------------------------------- seed
def training_seed(seed: int, round_: int, partition: int) -> int:
    """The local SGD seed of data ``partition`` in round ``round_`` of a job seeded ``seed``."""
    return seed * 1_000_003 + round_ * 7919 + partition


# ---------------------------------------------------------------- step cap
def base_steps(config: TrainConfig) -> int:
    """E: the job's own local steps, before any per-client override raised them."""
    return config.local_steps if config.base_local_steps is None else config.base_local_steps


def data_step_cap(base: int, num_train: int, batch_size: int) -> int:
    """max(5 * ceil(num_train / batch_size), base): the most steps an agent ever runs."""
    batches = -(-max(num_train, 0) // batch_size)
    return max(PASSES_CAP * batches, base)


def fixed_steps(config: TrainConfig, num_train: int) -> int:
    """Steps to run without the planner: ``local_steps``, capped only where raised above E.

    A job's own configured steps are never cut (a job may ask for many passes on purpose);
    only the part an override added is subject to the learner cap and to the job's
    ``max_steps_factor`` x E, the same bound the adaptive planner's extra steps obey.
    """
    base = base_steps(config)
    if config.local_steps <= base:
        return config.local_steps
    cap = min(data_step_cap(base, num_train, config.batch_size), config.max_steps_factor * base)
    return min(config.local_steps, cap)


def adaptive_max_steps(config: TrainConfig, num_train: int | None = None) -> int:
    """The planner's step ceiling: min(F * E, max(5 * batches, E)), at least 1.

    F is the job's ``max_steps_factor`` (default 10). Without a known data size
    (``num_train`` None or 0) only the F x bound applies.
    """
    base = base_steps(config)
    cap = config.max_steps_factor * base
    if num_train is not None and num_train > 0:
        cap = min(cap, data_step_cap(base, num_train, config.batch_size))
    return max(1, cap)


# ---------------------------------------------------------------- top-k bytes
def is_dense(keep_frac: float) -> bool:
    """Whether a payload at ``keep_frac`` is sent dense (``keep_frac >= 1``)."""
    check_keep_frac(keep_frac)
    return keep_frac >= 1.0


def kept_count(num_params: int, keep_frac: float) -> int:
    """k = max(1, round(keep_frac * P)), at most P: how many entries a payload keeps."""
    if num_params < 1:
        raise ValueError(f"num_params must be >= 1, got {num_params}")
    check_keep_frac(keep_frac)
    if keep_frac >= 1.0:
        return num_params
    return min(num_params, max(1, round(keep_frac * num_params)))


def index_dtype(num_params: int) -> np.dtype[Any]:
    """int32 when every index of a P-vector fits (P < 2**31), else int64."""
    return np.dtype(np.int32) if num_params < _INT32_LIMIT else np.dtype(np.int64)


def wire_bytes(num_params: int, keep_frac: float, value_dtype: npt.DTypeLike = np.float32) -> int:
    """Payload bytes of an update at ``keep_frac``: dense at 1, else indices + values.

    Tensor bytes only: the envelope adds its header and at most 2 x 63 bytes of
    alignment, which a time model can fold into a fixed per-upload cost.
    """
    value_size = float_dtype(value_dtype).itemsize
    if is_dense(keep_frac):
        if num_params < 1:
            raise ValueError(f"num_params must be >= 1, got {num_params}")
        return num_params * value_size
    k = kept_count(num_params, keep_frac)
    return k * (index_dtype(num_params).itemsize + value_size)


def effective_keep(
    num_params: int, keep_frac: float, value_dtype: npt.DTypeLike = np.float32
) -> float:
    """``keep_frac``, or 1.0 when the sparse payload would be no smaller than the dense one.

    Indices cost as much as values (int32 + float32), so below keep 1 a sparse update only
    pays off under keep 0.5: above that the dense delta says more for fewer bytes.
    """
    if is_dense(keep_frac):
        return 1.0
    dense = num_params * float_dtype(value_dtype).itemsize
    return 1.0 if wire_bytes(num_params, keep_frac, value_dtype) >= dense else keep_frac


def upload_bytes(num_params: int, keep_frac: float, value_dtype: npt.DTypeLike = np.float32) -> int:
    """Bytes actually sent at ``keep_frac``: the cheaper of sparse and dense."""
    return wire_bytes(num_params, effective_keep(num_params, keep_frac, value_dtype), value_dtype)


def value_dtype_of(name: str) -> type[np.floating[Any]]:
    """The numpy type of a config's ``value_dtype`` ("float16" or "float32")."""
    return np.float16 if name == "float16" else np.float32


def check_keep_frac(keep_frac: float) -> None:
    if not (math.isfinite(keep_frac) and keep_frac > 0.0):
        raise ValueError(f"keep_frac must be a finite number > 0, got {keep_frac}")


def float_dtype(value_dtype: npt.DTypeLike) -> np.dtype[Any]:
    dtype = np.dtype(value_dtype)
    if dtype.kind != "f":
        raise ValueError(f"value dtype must be a float dtype, got {dtype}")
    return dtype
