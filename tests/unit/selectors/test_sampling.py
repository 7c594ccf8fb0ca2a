"""Guarded sampling: Gumbel-top-k law, zero-weight guards, top_k ties."""

from __future__ import annotations

import numpy as np

from client_selectors.sampling import top_k, uniform_sample, weighted_sample


def test_first_draw_is_proportional_to_weight() -> None:
    rng = np.random.default_rng(0)
    weights = np.array([1.0, 2.0, 3.0, 4.0])
    firsts = np.array([weighted_sample(rng, weights, 1)[0] for _ in range(20_000)])
    freq = np.bincount(firsts, minlength=4) / firsts.size
    np.testing.assert_allclose(freq, weights / weights.sum(), atol=0.015)


def test_second_draw_follows_remaining_weights() -> None:
    # P(second = 2 | first = 0) = 3 / (2 + 3) for weights (1, 2, 3)
    rng = np.random.default_rng(1)
    weights = np.array([1.0, 2.0, 3.0])
    pairs = [tuple(weighted_sample(rng, weights, 2)) for _ in range(30_000)]
    after_zero = [b for a, b in pairs if a == 0]
    assert abs(np.mean(np.array(after_zero) == 2) - 3 / 5) < 0.03


def test_without_replacement_and_positive_first() -> None:
    rng = np.random.default_rng(2)
    weights = np.array([0.0, 5.0, 0.0, 1.0, 0.0, np.nan, -3.0])
    for _ in range(200):
        picks = weighted_sample(rng, weights, 5)
        assert len(set(picks.tolist())) == 5
        assert set(picks[:2].tolist()) == {1, 3}  # the only positive weights come first


def test_all_zero_weights_fall_back_to_uniform() -> None:
    rng = np.random.default_rng(3)
    counts = np.zeros(4)
    for _ in range(8000):
        counts[weighted_sample(rng, np.zeros(4), 1)[0]] += 1
    np.testing.assert_allclose(counts / counts.sum(), 0.25, atol=0.02)


def test_k_larger_than_pool_and_empty_pool() -> None:
    rng = np.random.default_rng(4)
    assert sorted(weighted_sample(rng, np.array([1.0, 0.0, 2.0]), 10).tolist()) == [0, 1, 2]
    assert weighted_sample(rng, np.array([]), 3).size == 0
    assert uniform_sample(rng, 0, 3).size == 0
    assert sorted(uniform_sample(rng, 3, 10).tolist()) == [0, 1, 2]


def test_top_k_orders_descending_and_breaks_ties_by_position() -> None:
    values = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    assert top_k(values, 3).tolist() == [1, 2, 4]
    assert top_k(values, 10).tolist() == [1, 2, 4, 3, 0]
    assert top_k(values, 0).size == 0
