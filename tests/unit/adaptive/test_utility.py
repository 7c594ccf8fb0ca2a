"""Statistical utility in the paper form (all samples of the round) and gradient utility."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.utility import UtilityAccumulator, gradient_utility, utility_bin


def accumulate(*batches: list[float]) -> UtilityAccumulator:
    acc = UtilityAccumulator()
    for batch in batches:
        acc.add_batch(np.asarray(batch, dtype=np.float32))
    return acc


def test_hand_computed_example() -> None:
    # Prepare: 2 steps of batch 2, the last one partial: losses 1, 2 | 3
    acc = accumulate([1.0, 2.0], [3.0])

    # Execute
    utility = acc.utility(num_local_samples=100, steps=2, batch_size=2)

    # Assert: sum of squares 1 + 4 + 9 = 14 over 3 samples; bin min(100, 2 * 2) = 4
    assert acc.sum_sq_loss == 14.0
    assert acc.num_samples == 3
    assert utility == pytest.approx(4 * math.sqrt(14 / 3))


def test_bin_is_capped_by_the_local_data_set() -> None:
    acc = accumulate([1.0, 1.0], [1.0, 1.0], [1.0, 1.0])  # 3 steps over a 3-sample set
    assert acc.utility(num_local_samples=3, steps=3, batch_size=2) == pytest.approx(3.0)
    assert utility_bin(3, 6) == 3 and utility_bin(10, 6) == 6


def test_all_samples_count_not_just_the_last_batch() -> None:
    # Prepare: two rounds with the same last batch and different earlier batches
    round_a = accumulate([0.1, 0.2], [0.3, 0.1], [0.5, 0.5])
    round_b = accumulate([2.0, 3.0], [1.0, 4.0], [0.5, 0.5])

    # Execute
    u_a = round_a.utility(num_local_samples=1000, steps=3, batch_size=2)
    u_b = round_b.utility(num_local_samples=1000, steps=3, batch_size=2)

    # Assert: different (a last-batch-only utility would give 6 * 0.5 for both)
    assert u_a != pytest.approx(u_b)
    assert u_a == pytest.approx(6 * math.sqrt((0.01 + 0.04 + 0.09 + 0.01 + 0.25 + 0.25) / 6))
    assert u_b == pytest.approx(6 * math.sqrt((4 + 9 + 1 + 16 + 0.25 + 0.25) / 6))


def test_mean_of_squares_not_square_of_mean() -> None:
    acc = accumulate([0.0, 2.0])
    assert acc.rms_loss() == pytest.approx(math.sqrt(2.0))  # (mean loss)**2 form gives 1


def test_accepts_sequences_and_column_arrays_without_torch() -> None:
    acc = UtilityAccumulator()
    acc.add_batch([1.0, 2.0])
    acc.add_batch(np.array([[3.0], [4.0]]))
    acc.add_batch(np.array([], dtype=np.float32))
    assert acc.num_samples == 4
    assert acc.sum_sq_loss == pytest.approx(30.0)


def test_matches_a_seeded_reference_over_many_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.exponential(size=32).astype(np.float32) for _ in range(50)]
    acc = UtilityAccumulator()
    for batch in batches:
        acc.add_batch(batch)
    everything = np.concatenate(batches).astype(np.float64)
    expected = min(800, 50 * 32) * math.sqrt(np.mean(everything**2))
    assert acc.utility(num_local_samples=800, steps=50, batch_size=32) == pytest.approx(expected)


def test_errors_are_loud() -> None:
    with pytest.raises(ValueError, match="NaN"):
        UtilityAccumulator().add_batch([1.0, float("nan")])
    with pytest.raises(ValueError, match="no per-sample losses"):
        UtilityAccumulator().utility(num_local_samples=10, steps=1, batch_size=2)
    with pytest.raises(ValueError, match="added twice"):
        accumulate([1.0, 1.0], [1.0, 1.0]).utility(num_local_samples=10, steps=1, batch_size=2)
    with pytest.raises(ValueError):
        accumulate([1.0]).utility(num_local_samples=0, steps=1, batch_size=2)


def test_gradient_utility_is_delta_norm_times_bin_over_100() -> None:
    assert gradient_utility(5.0, num_local_samples=100, trained_samples=40) == pytest.approx(2.0)
    assert gradient_utility(5.0, num_local_samples=30, trained_samples=40) == pytest.approx(1.5)
    assert gradient_utility(0.0, num_local_samples=30, trained_samples=40) == 0.0
    with pytest.raises(ValueError):
        gradient_utility(float("nan"), num_local_samples=30, trained_samples=40)
    with pytest.raises(ValueError):
        gradient_utility(-1.0, num_local_samples=30, trained_samples=40)
