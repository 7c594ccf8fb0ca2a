"""The registry and the single entry point the coordinator calls."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.aggregation import (
    AGGREGATORS,
    AggregationError,
    aggregate,
    check_knobs,
    coordinate_median,
    fedavg,
    knob_names,
    krum,
    trimmed_mean,
)

from .conftest import stack_of


def test_registry_names_every_rule() -> None:
    assert dict(AGGREGATORS) == {
        "fedavg": fedavg,
        "median": coordinate_median,
        "trimmed_mean": trimmed_mean,
        "krum": krum,
    }
    assert knob_names("fedavg") == ("block_columns",)
    assert knob_names("trimmed_mean") == ("trim_frac", "block_columns")
    assert knob_names("krum") == ("num_byzantine", "multi", "block_columns")


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_aggregate_dispatches_with_knobs(rng: np.random.Generator, name: str) -> None:
    matrix = rng.standard_normal((7, 64)).astype(np.float32)
    stack = stack_of(matrix)
    knobs = {"trimmed_mean": {"trim_frac": 0.3}, "krum": {"num_byzantine": 1, "multi": 2}}
    weights = rng.uniform(1, 5, 7)

    out = np.empty(64, np.float32)

    got = aggregate(name, stack, range(7), weights, **knobs.get(name, {}))
    into = aggregate(name, stack, range(7), weights, out=out, **knobs.get(name, {}))

    expected = AGGREGATORS[name](stack, range(7), weights, **knobs.get(name, {}))
    np.testing.assert_array_equal(got, expected)
    assert into is out
    np.testing.assert_array_equal(out, expected)


def test_unknown_name_lists_the_known_ones() -> None:
    stack = stack_of(np.ones((2, 3), np.float32))

    with pytest.raises(AggregationError, match="unknown aggregator 'fedprox'; known: fedavg"):
        aggregate("fedprox", stack, [0, 1], [1, 1])


def test_unknown_knob_is_named() -> None:
    stack = stack_of(np.ones((2, 3), np.float32))

    with pytest.raises(AggregationError, match="'fedavg' takes no knob 'trim_frac'"):
        aggregate("fedavg", stack, [0, 1], [1, 1], trim_frac=0.1)
    with pytest.raises(AggregationError, match="'krum' takes no knob 'f'"):
        check_knobs("krum", {"f": 1})
    with pytest.raises(AggregationError, match="takes no knob 'out'"):
        check_knobs("median", {"out": None})
    check_knobs("trimmed_mean", {"trim_frac": 0.1})


def test_errors_are_value_errors() -> None:
    stack = stack_of(np.ones((2, 3), np.float32))

    with pytest.raises(ValueError, match="no rows"):
        aggregate("median", stack, [], None)
    with pytest.raises(AggregationError, match="fedavg needs weights"):
        aggregate("fedavg", stack, [0, 1], None)
