"""Top-k sparsification: selection, round trip, value dtypes, wire size, top-k norm."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge_agent.compression import (
    SparseDelta,
    densify,
    index_dtype,
    is_dense,
    kept_count,
    sparsify,
    topk_indices,
    topk_norm,
    wire_bytes,
)
from fedbus.protocol import codec

KEEPS = (1e-6, 0.01, 0.1, 0.3, 0.5, 0.77, 0.999, 1.0, 2.0)


def reference_topk(delta: np.ndarray, keep_frac: float) -> np.ndarray:
    """Full stable sort by descending magnitude: ties go to the lowest index."""
    k = kept_count(delta.size, keep_frac)
    return np.sort(np.argsort(-np.abs(delta), kind="stable")[:k])


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 100_003])
@pytest.mark.parametrize("keep_frac", KEEPS)
def test_topk_indices_are_exactly_the_largest_magnitudes(size: int, keep_frac: float) -> None:
    # Prepare
    rng = np.random.default_rng(size)
    delta = rng.standard_normal(size).astype(np.float32)

    # Execute
    got = topk_indices(delta, keep_frac)

    # Assert
    np.testing.assert_array_equal(got, reference_topk(delta, keep_frac))
    assert got.dtype == np.int32
    assert got.size == max(1, min(size, round(keep_frac * size)))


def test_ties_at_the_threshold_go_to_the_lowest_indices() -> None:
    delta = np.array([3.0, 1.0, -1.0, 1.0, -2.0, 0.5, -1.0], dtype=np.float32)

    # k = 3: |3| and |-2| are above the tie, one of the four |1| entries joins them
    np.testing.assert_array_equal(topk_indices(delta, 3 / 7), [0, 1, 4])
    # k = 4: two of the tied entries, lowest indices first
    np.testing.assert_array_equal(topk_indices(delta, 4 / 7), [0, 1, 2, 4])
    # all equal magnitudes
    flat = np.array([-1.0, 1.0, -1.0, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(topk_indices(flat, 0.5), [0, 1])


def test_heavy_ties_match_the_reference() -> None:
    rng = np.random.default_rng(7)
    delta = rng.integers(-3, 4, size=10_000).astype(np.float32)  # 7 distinct values
    for keep in (0.05, 0.3, 0.5, 0.9):
        np.testing.assert_array_equal(topk_indices(delta, keep), reference_topk(delta, keep))


def test_count_rule_dense_rule_and_index_dtype() -> None:
    assert kept_count(10, 1e-9) == 1  # never empty
    assert kept_count(10, 0.25) == 2  # round(2.5) -> 2
    assert kept_count(10, 0.96) == 10
    assert kept_count(10, 1.5) == 10
    assert is_dense(1.0) and is_dense(3.0) and not is_dense(0.999)
    assert index_dtype(2**31 - 1) == np.int32
    assert index_dtype(2**31) == np.int64
    np.testing.assert_array_equal(
        topk_indices(np.ones(5, dtype=np.float32), 1.0), np.arange(5, dtype=np.int32)
    )


@pytest.mark.parametrize("keep_frac", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_keep_fraction_is_refused(keep_frac: float) -> None:
    with pytest.raises(ValueError):
        topk_indices(np.ones(4, dtype=np.float32), keep_frac)


def test_bad_deltas_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        topk_indices(np.array([1.0, np.nan, 2.0], dtype=np.float32), 0.5)
    with pytest.raises(ValueError, match="1-d"):
        sparsify(np.ones((2, 2), dtype=np.float32), 0.5)
    with pytest.raises(ValueError, match="empty"):
        topk_norm(np.zeros(0, dtype=np.float32), 0.5)
    with pytest.raises(ValueError, match="float"):
        topk_indices(np.arange(4), 0.5)


@pytest.mark.parametrize("keep_frac", KEEPS)
def test_sparsify_densify_round_trip(keep_frac: float) -> None:
    # Prepare
    rng = np.random.default_rng(1)
    delta = rng.standard_normal(5003).astype(np.float32)

    # Execute
    sparse = sparsify(delta, keep_frac)
    dense = densify(sparse)

    # Assert: the kept entries exactly, zeros elsewhere
    expected = np.zeros_like(delta)
    keep = reference_topk(delta, keep_frac)
    expected[keep] = delta[keep]
    np.testing.assert_array_equal(dense, expected)
    assert sparse.size == delta.size
    assert sparse.values.dtype == np.float32
    assert not sparse.indices.flags.writeable and not sparse.values.flags.writeable
    if keep_frac >= 1:
        np.testing.assert_array_equal(dense, delta)


def test_float16_values_round_trip_within_half_precision() -> None:
    rng = np.random.default_rng(2)
    delta = (rng.standard_normal(4000) * 1e-2).astype(np.float32)

    sparse = sparsify(delta, 0.3, value_dtype=np.float16)
    dense = densify(sparse)

    assert sparse.values.dtype == np.float16
    keep = reference_topk(delta, 0.3)
    np.testing.assert_allclose(dense[keep], delta[keep], rtol=1e-3)
    assert np.count_nonzero(dense) == keep.size
    assert sparse.values.nbytes == 2 * keep.size


def test_float16_overflow_is_refused_not_sent_as_inf() -> None:
    delta = np.array([1e5, 1.0, 2.0], dtype=np.float32)
    with pytest.raises(ValueError, match="overflow"):
        sparsify(delta, 0.5, value_dtype=np.float16)


def test_densify_rejects_indices_it_would_write_silently() -> None:
    values = np.ones(2, dtype=np.float32)
    for bad in ([1, 1], [2, 1], [-1, 2], [0, 5]):
        with pytest.raises(ValueError):
            densify(SparseDelta(size=5, indices=np.array(bad, dtype=np.int32), values=values))


def test_sparse_delta_travels_through_the_codec() -> None:
    rng = np.random.default_rng(3)
    delta = rng.standard_normal(1000).astype(np.float32)
    sparse = sparsify(delta, 0.1, value_dtype=np.float16)

    decoded = codec.decode(bytes(codec.encode({"round": 1}, {"delta": sparse})))

    received = decoded.tensors["delta"]
    assert isinstance(received, SparseDelta)
    np.testing.assert_array_equal(densify(received), densify(sparse))


def test_wire_bytes_shrink_with_keep_frac_and_match_the_arrays() -> None:
    num_params = 100_000
    delta = np.random.default_rng(4).standard_normal(num_params).astype(np.float32)
    keeps = np.linspace(0.05, 0.95, 19)

    sizes = [wire_bytes(num_params, float(k)) for k in keeps]

    assert all(a < b for a, b in itertools.pairwise(sizes))
    assert wire_bytes(num_params, 1.0) == 4 * num_params  # dense float32
    assert wire_bytes(num_params, 1.0, np.float16) == 2 * num_params
    assert wire_bytes(num_params, 0.5) == 4 * num_params  # int32 + float32: the crossover
    assert wire_bytes(num_params, 0.3) == 8 * 30_000
    assert wire_bytes(num_params, 0.3, np.float16) == 6 * 30_000
    for keep in (0.01, 0.3, 0.77):
        for vdt in (np.float32, np.float16):
            sparse = sparsify(delta, keep, value_dtype=vdt)
            assert wire_bytes(num_params, keep, vdt) == (
                sparse.indices.nbytes + sparse.values.nbytes
            )


@pytest.mark.parametrize("keep_frac", KEEPS)
def test_topk_norm_equals_the_reference_norm(keep_frac: float) -> None:
    rng = np.random.default_rng(5)
    delta = rng.standard_normal(50_001).astype(np.float32)
    k = kept_count(delta.size, keep_frac)
    reference = float(np.sqrt(np.sort(delta.astype(np.float64) ** 2)[::-1][:k].sum()))

    got = topk_norm(delta, keep_frac)

    assert got == pytest.approx(reference, rel=1e-6)
    assert got == pytest.approx(float(np.linalg.norm(densify(sparsify(delta, keep_frac)))))


def test_topk_norm_does_not_modify_the_delta_and_flags_non_finite() -> None:
    delta = np.array([3.0, -4.0, 1.0], dtype=np.float32)
    before = delta.copy()
    assert topk_norm(delta, 2 / 3) == pytest.approx(5.0)
    np.testing.assert_array_equal(delta, before)
    assert not np.isfinite(topk_norm(np.array([np.nan, 1.0, 2.0, 3.0]), 0.25))
    assert not np.isfinite(topk_norm(np.array([1.0, np.inf, 2.0, 3.0]), 0.25))
