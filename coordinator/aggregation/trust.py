"""Limits on how much the coordinator believes an agent: pure functions, no I/O.

An authenticated agent still chooses what it reports. Unbounded, one agent of eight that
claims ``num_examples = 10**9`` owns FedAvg (0.947 -> 0.262 accuracy in issue #16), and
one forged validation result (accuracy 1.0 over 10**12 examples) becomes the job's
reported accuracy. What bounds it (the job's ``trust:`` settings, docs/security.md):

- :func:`capped_weights`: an update's FedAvg weight is at most what the agent can hold:
  the partition size it registered in its profile (``cap_by_profile``, on by default: an
  honest agent never reports more), the job's ``max_examples``, and optionally
  ``median_weight_cap`` times the round's median count. Validation results get the same
  caps, with the median cap on by default (``metric_median_cap``, 2x).
- :func:`clip_rows`: optional (``norm_clip: c``): an update whose L2 norm exceeds ``c``
  times the median norm of the round is scaled down to it, so one noisy or scaled update
  moves the model no more than ``c`` honest ones. Off by default (FedAvg as published).
- :func:`summarize`: validation metrics as a weighted mean *and* median and spread
  (interquartile range): a lone forged figure shows up as a mean far from the median. A
  server-side evaluation (the job's ``test_data``) is the figure to trust when set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coordinator.aggregation.stack import UpdateStack


def capped_weights(
    reported: Sequence[int],
    registered: Sequence[int | None],
    *,
    max_examples: int | None,
    cap_by_profile: bool,
    median_cap: float | None = None,
) -> list[float]:
    """Each reported example count, capped by the agent's registered size and the job cap,
    then (``median_cap``) at that many times the median of the capped counts.

    ``registered[i]`` is the agent's profile ``num_samples`` (None or 0: unknown, no cap).
    The median cap needs no registration: while most agents are honest, the median is an
    honest count, so one agent's claim weighs at most ``median_cap`` honest agents.
    Every weight is at least 1 (an update with no examples still counts, as before).
    """
    weights = []
    for count, size in zip(reported, registered, strict=True):
        limit = count
        if cap_by_profile and size:
            limit = min(limit, size)
        if max_examples is not None:
            limit = min(limit, max_examples)
        weights.append(float(max(limit, 1)))
    if median_cap is not None and weights:
        bound = median_cap * float(np.median(weights))
        weights = [min(w, bound) for w in weights]
    return weights


def clip_rows(stack: UpdateStack, rows: Sequence[int], factor: float) -> dict[int, float]:
    """Scale rows whose L2 norm exceeds ``factor`` x the median row norm; in place.

    Returns the scale applied to each clipped row (row -> scale < 1). Fewer than two rows:
    no median to compare against, nothing clipped.
    """
    if factor <= 0:
        raise ValueError("norm_clip must be positive")
    if len(rows) < 2:
        return {}
    norms = np.array([float(np.linalg.norm(stack.row(r))) for r in rows])
    bound = factor * float(np.median(norms))
    scaled = {}
    for row, norm in zip(rows, norms, strict=True):
        if norm > bound > 0:
            scale = bound / norm
            view = stack.row(row)
            view *= np.float32(scale)
            scaled[row] = scale
    return scaled


@dataclass(frozen=True)
class MetricSummary:
    weighted_mean: float
    median: float
    spread: float  # interquartile range (q75 - q25) of the per-agent values
    count: int

    def as_fields(self, name: str) -> dict[str, float]:
        """Event fields beside ``name`` (the weighted mean, which stays under ``name``)."""
        return {f"{name}_median": self.median, f"{name}_spread": self.spread}


def summarize(values: Sequence[float], weights: Sequence[float]) -> MetricSummary:
    """Weighted mean, median and interquartile spread of per-agent metric values."""
    if not values:
        raise ValueError("no values to summarize")
    array = np.asarray(values, dtype=np.float64)
    q25, q50, q75 = np.percentile(array, [25, 50, 75])
    return MetricSummary(
        weighted_mean=float(np.average(array, weights=np.asarray(weights, dtype=np.float64))),
        median=float(q50),
        spread=float(q75 - q25),
        count=len(values),
    )
