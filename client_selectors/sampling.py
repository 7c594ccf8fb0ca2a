"""Sampling without replacement over numpy weight vectors, with the guards Oort lacked.

Oort and FedScale call ``numpy.random.choice(pool, k, p=w/sum(w), replace=False)``, which
fails when fewer than k weights are non-zero and when every weight is zero. Here a weighted
draw is the Gumbel-top-k trick: key_i = log(w_i) + Gumbel_i, take the k largest keys. Its
law is exactly that of k successive draws without replacement with P proportional to the
remaining weights, it is O(n) with ``argpartition`` instead of k passes, and it never fails:

- weights that are zero, negative or non-finite count as zero;
- positive-weight entries are always drawn before zero-weight ones;
- if fewer than k weights are positive, the rest are drawn uniformly among the zero ones.

The generator is always advanced by exactly n Gumbel draws, whatever the weights, so the
RNG stream (and so a restored selector) depends only on the pool size.
"""

from __future__ import annotations

import numpy as np


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest values, largest first; ties keep the lower position first."""
    n = values.shape[0]
    k = max(0, min(k, n))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        part = np.argpartition(-values, k - 1)[:k]
        part.sort()  # position order, so the stable sort below breaks ties by position
    else:
        part = np.arange(n)
    order = np.argsort(-values[part], kind="stable")
    return part[order].astype(np.int64)


def weighted_sample(rng: np.random.Generator, weights: np.ndarray, k: int) -> np.ndarray:
    """k positions drawn without replacement, P proportional to weight, in draw order."""
    n = weights.shape[0]
    k = max(0, min(k, n))
    gumbel = np.asarray(rng.gumbel(size=n), dtype=np.float64)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    positive = np.isfinite(w) & (w > 0)
    pos_idx = np.flatnonzero(positive)
    if pos_idx.size >= k:
        keys = np.log(w[pos_idx]) + gumbel[pos_idx]
        result: np.ndarray = pos_idx[top_k(keys, k)]
        return result
    keys = np.log(w[pos_idx]) + gumbel[pos_idx]
    first = pos_idx[top_k(keys, pos_idx.size)]
    zero_idx = np.flatnonzero(~positive)
    rest = zero_idx[top_k(gumbel[zero_idx], k - pos_idx.size)]
    return np.concatenate([first, rest])


def uniform_sample(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """k of ``range(n)`` uniformly without replacement (O(k) for k much smaller than n)."""
    k = max(0, min(k, n))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    return rng.choice(n, size=k, replace=False).astype(np.int64)
