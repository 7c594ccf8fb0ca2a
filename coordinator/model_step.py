"""The global model's step: the kept updates' aggregate applied, or nothing if it overflows.

Pure numpy, no I/O, synchronous (the job runner calls it in a worker thread). Buffers are
reused round after round: the aggregate is written into the spare buffer, the model is
added into it, and only if the result is finite everywhere do the two buffers swap.
"""

from __future__ import annotations

import numpy as np

from coordinator.aggregation import UpdateStack, aggregate
from coordinator.aggregation.trust import clip_rows
from coordinator.config import AggregatorConfig


def step(
    model: np.ndarray,
    spare: np.ndarray | None,
    stack: UpdateStack,
    rows: list[int],
    weights: list[float],
    aggregator: AggregatorConfig,
    norm_clip: float | None = None,
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(new model, spare buffer, rows clipped) after aggregating ``rows``; None if the
    model overflows. ``norm_clip`` first scales rows longer than that many times the median
    row norm down to it (coordinator/aggregation/trust.py), in the stack.

    ``spare`` (reused when it has the model's shape) receives the new model; the old
    model's buffer comes back as the next round's spare. Every update was checked finite,
    but their aggregate can still overflow the model: then nothing changes.
    """
    clipped = len(clip_rows(stack, rows, norm_clip)) if norm_clip is not None else 0
    if spare is None or spare.shape != model.shape:
        spare = np.empty_like(model)
    # Into a reused buffer: a fresh 47 MB result costs as much as the FedAvg itself.
    delta = aggregate(aggregator.name, stack, rows, weights, out=spare, **aggregator.knobs)
    if aggregator.server_lr != 1.0:
        delta *= np.float32(aggregator.server_lr)
    np.add(model, delta, out=delta)
    with np.errstate(over="ignore", invalid="ignore"):
        if not bool(np.isfinite(delta.sum(dtype=np.float32))):
            return None
    return delta, model, clipped
