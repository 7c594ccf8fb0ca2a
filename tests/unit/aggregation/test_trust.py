"""Trust limits: capped weights, norm clipping, robust metric summaries."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.aggregation import aggregate
from coordinator.aggregation.stack import UpdateStack
from coordinator.aggregation.trust import capped_weights, clip_rows, summarize


def test_weights_are_capped_by_registered_size_and_job_cap() -> None:
    reported = [200, 10**9, 150, 0]
    registered = [200, 225, None, 100]
    assert capped_weights(reported, registered, max_examples=None, cap_by_profile=True) == [
        200.0,
        225.0,
        150.0,
        1.0,
    ]
    assert capped_weights(reported, registered, max_examples=180, cap_by_profile=False) == [
        180.0,
        180.0,
        150.0,
        1.0,
    ]
    # Off: what the agents said (the default FedAvg of before).
    assert capped_weights(reported, [None] * 4, max_examples=None, cap_by_profile=True) == [
        200.0,
        1e9,
        150.0,
        1.0,
    ]


def test_one_lying_agent_no_longer_owns_fedavg() -> None:
    rng = np.random.default_rng(0)
    stack = UpdateStack(50, 8)
    honest = rng.normal(0.0, 0.01, 50).astype(np.float32)
    for k in range(7):
        stack.put_dense(k, honest + rng.normal(0.0, 0.001, 50).astype(np.float32))
    stack.put_dense(7, (5.0 * rng.normal(0.0, 1.0, 50)).astype(np.float32))  # noise x5
    rows = list(range(8))
    reported = [200] * 7 + [10**9]
    trusting = aggregate("fedavg", stack, rows, [float(w) for w in reported])
    weights = capped_weights(reported, [200] * 8, max_examples=None, cap_by_profile=True)
    clip_rows(stack, rows, 1.5)
    limited = aggregate("fedavg", stack, rows, weights)
    assert np.linalg.norm(trusting - honest) > 100 * np.linalg.norm(honest)
    assert np.linalg.norm(limited - honest) < 0.25 * np.linalg.norm(honest)


def test_clip_scales_only_long_rows_to_the_bound() -> None:
    stack = UpdateStack(2, 3)
    stack.put_dense(0, np.array([3.0, 4.0], np.float32))  # norm 5
    stack.put_dense(1, np.array([0.0, 5.0], np.float32))  # norm 5
    stack.put_dense(2, np.array([0.0, 50.0], np.float32))  # norm 50
    assert clip_rows(stack, [0, 1, 2], 2.0) == {2: pytest.approx(0.2)}
    np.testing.assert_allclose(stack.row(2), [0.0, 10.0])
    np.testing.assert_allclose(stack.row(0), [3.0, 4.0])
    assert clip_rows(stack, [0], 2.0) == {}


def test_a_forged_metric_shows_as_a_mean_far_from_the_median() -> None:
    honest = [0.91, 0.93, 0.92, 0.90, 0.94, 0.92, 0.93]
    forged = summarize([*honest, 1.0], [45.0] * 7 + [1e12])
    assert forged.weighted_mean > 0.99
    assert forged.median == pytest.approx(0.925)
    capped = summarize([*honest, 1.0], [45.0] * 8)
    assert abs(capped.weighted_mean - np.mean(honest)) < 0.02
    assert capped.as_fields("accuracy") == {
        "accuracy_median": capped.median,
        "accuracy_spread": capped.spread,
    }


def test_the_median_cap_needs_no_registration() -> None:
    reported = [45, 50, 40, 10**12]
    weights = capped_weights(
        reported, [None] * 4, max_examples=None, cap_by_profile=True, median_cap=2.0
    )
    assert weights == [45.0, 50.0, 40.0, 95.0]  # 2 x median(45, 50, 40, 1e12) = 95
