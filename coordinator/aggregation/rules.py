"""The explicit registry of aggregation rules, and the one entry point the coordinator calls."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from coordinator.aggregation._inputs import Rows, Weights
from coordinator.aggregation.errors import AggregationError
from coordinator.aggregation.mean import fedavg
from coordinator.aggregation.robust import coordinate_median, krum, trimmed_mean
from coordinator.aggregation.stack import UpdateStack

Aggregator = Callable[..., np.ndarray]

AGGREGATORS: Mapping[str, Aggregator] = MappingProxyType(
    {
        "fedavg": fedavg,
        "median": coordinate_median,
        "trimmed_mean": trimmed_mean,
        "krum": krum,
    }
)


def knob_names(name: str) -> tuple[str, ...]:
    """The keyword knobs aggregator ``name`` accepts (a config may set these)."""
    return tuple(
        p.name
        for p in inspect.signature(_lookup(name)).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "out"
    )


def _lookup(name: str) -> Aggregator:
    try:
        return AGGREGATORS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(AGGREGATORS))
        raise AggregationError(f"unknown aggregator {name!r}; known: {known}") from None


def check_knobs(name: str, knobs: Mapping[str, Any]) -> None:
    """Fail at start-up, not after the first round: the name exists and takes these knobs.

    Checks names only; values are checked when the aggregator runs.
    """
    allowed = knob_names(name)
    unknown = sorted(set(knobs) - set(allowed))
    if unknown:
        raise AggregationError(
            f"aggregator {name!r} takes no knob {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(allowed)}"
        )


def aggregate(
    name: str,
    stack: UpdateStack,
    rows: Rows,
    weights: Weights | None,
    *,
    out: np.ndarray | None = None,
    **knobs: Any,
) -> np.ndarray:
    """Run aggregator ``name`` on ``rows`` of ``stack``; returns the aggregated float32 delta.

    ``out``: a float32 (P,) buffer outside the stack to write the result into (and
    return) instead of allocating a new array each round.

    Raises AggregationError for an unknown name, a knob it does not take, a bad knob
    value, empty or invalid rows, bad weights, or a bad ``out``.
    """
    check_knobs(name, knobs)
    if weights is None and name == "fedavg":
        raise AggregationError("fedavg needs weights (e.g. num_examples per update)")
    return _lookup(name)(stack, rows, weights, out=out, **knobs)
