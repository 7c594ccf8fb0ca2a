"""Oort's arithmetic as free functions over numpy arrays (ALGORITHMS.md §1.3).

Kept apart from the selector so each formula can be checked by hand in a test:

- ``preferred_duration``: T is a *percentile* of the estimated durations of **all**
  registered clients (not just the online ones); round_threshold >= 100 means T = inf.
- ``reward_norm``: clip at the ``clip_bound`` quantile, ``lo = 0.999 * min``,
  ``span = max(max - lo, 1e-4)`` over the positive rewards of the candidates; an empty set
  gives clip 0, lo 0, span 1 (scores are then the exploration bonus alone).
- ``exploit_scores``: ``|((min(r, clip) - lo) / span + sqrt(0.1 ln t / L)) * penalty|``
  where L is the call at which the client last gave feedback (>= 1) and the penalty
  ``(T / d) ** alpha`` applies only when d > T.
- ``exploit_len``: [F]'s ``min(K - floor(K * eps), |S|)``.
- ``cutoff_pool``: cut-off = ``cut_off_util`` x the score at position ``exploit_len`` of
  the descending order, the position clamped to the last one (the original indexes past
  the end when exploit_len == |S|); the pool is every score >= cut-off, grown to at least
  ``10 * exploit_len + 1`` top scores as [F] does ("at least 10x for augmentation").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from client_selectors.sampling import top_k

MIN_DURATION = 1e-4
MIN_SPAN = 1e-4


def preferred_duration(durations: np.ndarray, round_threshold: float) -> float:
    """The round_threshold-th percentile of ``durations`` (inf at >= 100 or when empty)."""
    n = durations.shape[0]
    if round_threshold >= 100.0 or n == 0:
        return math.inf
    k = min(int(n * round_threshold / 100.0), n - 1)
    return float(np.partition(durations, k)[k])


def system_penalty(durations: np.ndarray, t_pref: float, alpha: float) -> np.ndarray:
    """Multiplier (T / d) ** alpha where d > T, else 1."""
    out = np.ones(durations.shape[0], dtype=np.float64)
    if math.isinf(t_pref):
        return out
    slow = durations > t_pref
    out[slow] = (t_pref / np.maximum(durations[slow], MIN_DURATION)) ** alpha
    return out


@dataclass(frozen=True)
class RewardNorm:
    """Clip value, shifted minimum and range used to min-max normalise rewards."""

    clip: float
    lo: float
    span: float


def reward_norm(rewards: np.ndarray, clip_bound: float) -> RewardNorm:
    """Normalisation over the positive entries of ``rewards``."""
    positive = rewards[rewards > 0]
    n = positive.shape[0]
    if n == 0:
        return RewardNorm(clip=0.0, lo=0.0, span=1.0)
    k = min(int(n * clip_bound), n - 1)
    clip = float(np.partition(positive, k)[k])
    lo = 0.999 * float(positive.min())
    span = max(float(positive.max()) - lo, MIN_SPAN)
    return RewardNorm(clip=clip, lo=lo, span=span)


def exploit_scores(
    rewards: np.ndarray,
    last_feedback: np.ndarray,
    durations: np.ndarray,
    t: int,
    norm: RewardNorm,
    t_pref: float,
    alpha: float,
) -> np.ndarray:
    """Oort's score of each explored candidate at selector call ``t``."""
    stat = (np.minimum(rewards, norm.clip) - norm.lo) / norm.span
    bonus = np.sqrt(0.1 * math.log(max(t, 1)) / np.maximum(last_feedback, 1))
    result: np.ndarray = np.abs((stat + bonus) * system_penalty(durations, t_pref, alpha))
    return result


def exploit_len(num: int, epsilon: float, num_scored: int) -> int:
    """How many exploit picks: ``min(K - floor(K * eps), |S|)``."""
    return max(0, min(num - math.floor(num * epsilon), num_scored))


def cutoff_pool(
    scores: np.ndarray, n_exploit: int, cut_off_util: float, min_factor: float = 10.0
) -> np.ndarray:
    """Positions of the scores eligible for the exploit draw (see module docstring)."""
    n = scores.shape[0]
    if n == 0 or n_exploit <= 0:
        return np.empty(0, dtype=np.int64)
    k = min(n_exploit, n - 1)
    kth_largest = float(-np.partition(-scores, k)[k])
    cutoff = kth_largest * cut_off_util
    above = np.flatnonzero(scores >= cutoff)
    wanted = min(n, int(min_factor * n_exploit) + 1)
    if above.shape[0] >= wanted:
        return above.astype(np.int64)
    return np.sort(top_k(scores, wanted))
