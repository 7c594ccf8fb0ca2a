"""The job's round budget: who sets ``t_budget`` each round, and the job-level pacer's hook.

Three sources, in order of precedence:

1. a selector that paces its own budget (Bliss: Oort's utility rule on ``t_budget``);
2. the job-level :class:`~client_selectors.pacer.BudgetPacer`, with adaptive training
   and ``budget_pacer: true`` (the default), bounded by ``t_budget_min`` / ``t_budget_max``;
3. the job file's fixed ``t_budget``.

Plain functions over plain values, so the round engine (``coordinator/job_runner.py``
today) needs one call to read the budget and one to feed it a closed round.
"""

from __future__ import annotations

from typing import Any

from client_selectors.base import ClientSelector
from client_selectors.pacer import BudgetPacer, RoundOutcome
from coordinator.config import JobConfig


def make_budget_pacer(config: JobConfig, selector: ClientSelector) -> BudgetPacer | None:
    """The job-level pacer, or None when the job's budget is fixed or the selector paces.

    Only adaptive agents plan to the budget; without adaptive training it would move a
    number nothing reads.
    """
    if not (config.adaptive_training and config.budget_pacer) or selector.t_budget is not None:
        return None
    return BudgetPacer(config.t_budget, config.budget_bounds)


def round_budget(config: JobConfig, selector: ClientSelector, pacer: BudgetPacer | None) -> float:
    """This round's ``t_budget`` in seconds."""
    own = selector.t_budget
    if own is not None:
        return own
    return pacer.value if pacer is not None else config.t_budget


def pace_round(
    pacer: BudgetPacer | None,
    config: JobConfig,
    *,
    dispatched: int,
    succeeded: int,
    counted: int,
) -> dict[str, Any] | None:
    """Feed a closed round to the pacer; what it did, for the round's event (None: no pacer)."""
    if pacer is None:
        return None
    before = pacer.value
    move = pacer.observe(
        RoundOutcome(
            dispatched=dispatched,
            succeeded=succeeded,
            counted=counted,
            target=config.num_participants,
            required=config.clients_required,
        )
    )
    return {"before": before, "after": pacer.value, "move": move}
