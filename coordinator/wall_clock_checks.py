"""Job settings the wall clock cannot honour, refused when the job file is loaded.

On the virtual clock the time model prices every step and transfer; on the wall clock the
agents measure their own. A setting that only the time model reads, or a budget the round
cannot wait for, would otherwise be silently ignored and the run labelled as if it had
been honoured.
"""

from __future__ import annotations

from typing import Any


def check_wall_clock(config: Any) -> None:
    """Raise ``ValueError`` naming the field when ``config`` asks what the wall clock cannot do."""
    if config.clock != "wall":
        return
    if config.time_model_params is not None:
        raise ValueError(
            "time_model_params is read by the virtual clock's time model only; on the wall "
            "clock agents measure the real model (remove it, or set clock: virtual)"
        )
    if config.adaptive_training and config.t_budget >= config.round_timeout:
        raise ValueError(
            f"t_budget ({config.t_budget} s) must be below round_timeout "
            f"({config.round_timeout} s) for adaptive training on the wall clock: agents "
            "plan their work to end within t_budget, and the round stops waiting at "
            "round_timeout"
        )
