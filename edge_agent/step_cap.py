"""PyramidFL's learner step cap, shared by the fixed-steps and the adaptive training paths.

[P]'s learner never runs more than max(5 * #batches, E) iterations, E being the job's own
local steps: extra steps bought with idle time (PyramidFL's override, or the adaptive
budget planner) must not turn into dozens of passes over a handful of local samples.
E is ``TrainConfig.base_local_steps``: ``local_steps`` may already be the raised value.
"""

from __future__ import annotations

from fedbus.protocol.messages import TrainConfig

PASSES_CAP = 5
"""At most this many passes over the local data ([P] learner)."""
MAX_EXTRA_FACTOR = 10
"""Adaptive training: idle time buys at most 10x the job's local steps."""


def base_steps(config: TrainConfig) -> int:
    """E: the job's own local steps, before any per-client override raised them."""
    return config.local_steps if config.base_local_steps is None else config.base_local_steps


def data_step_cap(base: int, num_train: int, batch_size: int) -> int:
    """max(5 * ceil(num_train / batch_size), base): the most steps an agent ever runs."""
    batches = -(-max(num_train, 0) // batch_size)
    return max(PASSES_CAP * batches, base)


def fixed_steps(config: TrainConfig, num_train: int) -> int:
    """Steps to run without the planner: ``local_steps``, capped only where raised above E.

    A job's own configured steps are never cut (a job may ask for many passes on purpose);
    only the part an override added is subject to the learner cap.
    """
    base = base_steps(config)
    if config.local_steps <= base:
        return config.local_steps
    return min(config.local_steps, data_step_cap(base, num_train, config.batch_size))


def adaptive_max_steps(config: TrainConfig, num_train: int | None = None) -> int:
    """The planner's step ceiling: min(10 * E, max(5 * batches, E)), at least 1.

    Without a known data size (``num_train`` None or 0) only the 10x bound applies.
    """
    base = base_steps(config)
    cap = MAX_EXTRA_FACTOR * base
    if num_train is not None and num_train > 0:
        cap = min(cap, data_step_cap(base, num_train, config.batch_size))
    return max(1, cap)
