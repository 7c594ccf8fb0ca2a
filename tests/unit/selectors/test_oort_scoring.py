"""Oort's arithmetic, hand-checked (ALGORITHMS.md §7 #2, #3, #5, #6)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from client_selectors.oort_scoring import (
    RewardNorm,
    cutoff_pool,
    exploit_len,
    exploit_scores,
    preferred_duration,
    reward_norm,
    system_penalty,
)


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [(30.0, 2.0), (0.0, 1.0), (99.0, 5.0), (50.0, 3.0), (100.0, math.inf)],
)
def test_preferred_duration_is_a_percentile(threshold: float, expected: float) -> None:
    # n = 5: index min(floor(5 * pct / 100), 4) of the sorted durations [1, 2, 3, 4, 5]
    durations = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    assert preferred_duration(durations, threshold) == expected


def test_penalty_only_above_the_preferred_duration() -> None:
    penalty = system_penalty(np.array([1.0, 5.0, 10.0, 20.0]), 5.0, 2.0)
    np.testing.assert_allclose(penalty, [1.0, 1.0, 0.25, 0.0625])
    np.testing.assert_allclose(system_penalty(np.array([1e9]), math.inf, 2.0), [1.0])
    np.testing.assert_allclose(system_penalty(np.array([10.0]), 5.0, 0.0), [1.0])  # w/o Sys


def test_reward_norm_clips_at_quantile_over_positive_rewards() -> None:
    rewards = np.array([0.0, 2.0, 4.0, 6.0, 8.0, 10.0, -1.0])
    norm = reward_norm(rewards, 0.9)  # positives [2..10], index min(int(4.5), 4) = 4
    assert norm.clip == 10.0
    assert norm.lo == pytest.approx(0.999 * 2.0)
    assert norm.span == pytest.approx(10.0 - 1.998)
    assert reward_norm(rewards, 0.5).clip == 6.0  # index int(2.5) = 2
    assert reward_norm(np.array([0.0, -2.0]), 0.9) == RewardNorm(0.0, 0.0, 1.0)  # guard
    assert reward_norm(np.array([3.0, 3.0]), 0.9).span == pytest.approx(3.0 - 0.999 * 3.0)


def test_score_is_clipped_reward_plus_ucb_bonus_over_last_feedback_round() -> None:
    norm = RewardNorm(clip=8.0, lo=0.0, span=10.0)
    scores = exploit_scores(
        rewards=np.array([10.0, 2.0, 2.0]),
        last_feedback=np.array([1, 4, 0]),
        durations=np.array([1.0, 10.0, 1.0]),
        t=4,
        norm=norm,
        t_pref=5.0,
        alpha=2.0,
    )
    bonus_l1 = math.sqrt(0.1 * math.log(4) / 1)
    bonus_l4 = math.sqrt(0.1 * math.log(4) / 4)  # L = t: not staleness, which would be 0
    assert scores[0] == pytest.approx(0.8 + bonus_l1)  # reward clipped at 8
    assert scores[1] == pytest.approx((0.2 + bonus_l4) * (5.0 / 10.0) ** 2)  # slow: penalised
    assert scores[2] == pytest.approx(0.2 + bonus_l1)  # L clamped to >= 1
    first_call = exploit_scores(np.array([2.0]), np.array([1]), np.array([1.0]), 1, norm, 5.0, 2.0)
    assert first_call[0] == pytest.approx(0.2)  # ln 1 = 0


def test_scores_are_absolute_values() -> None:
    norm = RewardNorm(clip=10.0, lo=5.0, span=1.0)
    score = exploit_scores(np.array([0.0]), np.array([1]), np.array([1.0]), 1, norm, 5.0, 2.0)
    assert score[0] == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("k", "eps", "scored", "expected"),
    [(10, 0.9 * 0.98, 100, 2), (10, 0.3, 100, 7), (10, 0.3, 5, 5), (10, 0.0, 100, 10)],
)
def test_exploit_len_is_k_minus_floor_k_eps(k: int, eps: float, scored: int, expected: int) -> None:
    assert exploit_len(k, eps, scored) == expected


def test_cutoff_pool_keeps_everything_above_cutoff() -> None:
    scores = np.linspace(1.0, 0.02, 50)
    pool = cutoff_pool(scores, 2, 0.05)  # cutoff = 0.05 * scores[2]
    assert pool.tolist() == np.flatnonzero(scores >= 0.05 * scores[2]).tolist()


def test_cutoff_pool_grows_to_ten_times_exploit_len() -> None:
    scores = np.linspace(1.0, 0.02, 50)
    pool = cutoff_pool(scores, 2, 0.99)  # only 3 scores above the cutoff
    assert pool.tolist() == list(range(21))  # [F]: more than 10 * exploitLen candidates


def test_cutoff_pool_without_a_floor_is_oorts_own_prefix() -> None:
    scores = np.linspace(1.0, 0.02, 50)
    # [O]: the scores >= cut_off_util x the exploitLen-th, nothing added
    pool = cutoff_pool(scores, 2, 0.7, min_factor=0.0)
    assert pool.tolist() == np.flatnonzero(scores >= 0.7 * scores[2]).tolist()
    assert pool.size < 21  # the [F] floor would have made it 21


def test_cutoff_pool_clamps_the_index_when_everything_is_exploited() -> None:
    scores = np.array([0.5, 0.9, 0.1])
    assert sorted(cutoff_pool(scores, 3, 0.7).tolist()) == [0, 1, 2]  # original: IndexError
    assert cutoff_pool(np.array([]), 2, 0.7).size == 0
    assert cutoff_pool(scores, 0, 0.7).size == 0
