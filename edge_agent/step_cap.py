"""PyramidFL's learner step cap, shared by the fixed-steps and the adaptive training paths.

The formulas live in :mod:`fedbus.protocol.formulas` (the coordinator prices a round with
the same numbers); this module keeps the agent-side names.
"""

from __future__ import annotations

from fedbus.protocol.formulas import (
    MAX_EXTRA_FACTOR,
    PASSES_CAP,
    adaptive_max_steps,
    base_steps,
    data_step_cap,
    fixed_steps,
)

__all__ = [
    "MAX_EXTRA_FACTOR",
    "PASSES_CAP",
    "adaptive_max_steps",
    "base_steps",
    "data_step_cap",
    "fixed_steps",
]
