"""The job's round budget: who sets ``t_budget`` each round, and the job-level pacer's hook.

With adaptive training and ``budget_pacer: true`` (the default) the job-level
:class:`~client_selectors.pacer.BudgetPacer` moves the budget after every round, within
``t_budget_min`` / ``t_budget_max``. A selector that paces its own budget (Bliss: Oort's
utility rule on ``t_budget``) keeps precedence: its value is the round's budget, the job
pacer moves *that* value after the round (``pace_budget``), and the selector's own rule
moves it again at its next selection, last before the round uses it. Without adaptive
training, or with ``budget_pacer: false``, the budget is the selector's or the job's.

Plain functions over plain values, so the round engine (``coordinator/job_runner.py``
today) needs one call to read the budget and one to feed it a closed round.
"""

from __future__ import annotations

from typing import Any

from client_selectors.base import ClientSelector
from client_selectors.pacer import BudgetPacer, RoundOutcome
from coordinator.config import JobConfig


def make_budget_pacer(config: JobConfig, selector: ClientSelector) -> BudgetPacer | None:
    """The job-level pacer, or None when the job's budget is fixed.

    Only adaptive agents plan to the budget; without adaptive training it would move a
    number nothing reads.
    """
    if not (config.adaptive_training and config.budget_pacer):
        return None
    own = selector.t_budget
    return BudgetPacer(config.t_budget if own is None else own, config.budget_bounds)


def round_budget(config: JobConfig, selector: ClientSelector, pacer: BudgetPacer | None) -> float:
    """This round's ``t_budget`` in seconds: the selector's own first."""
    own = selector.t_budget
    if own is not None:
        return own
    return pacer.value if pacer is not None else config.t_budget


def pace_round(
    pacer: BudgetPacer | None,
    config: JobConfig,
    selector: ClientSelector,
    *,
    dispatched: int,
    succeeded: int,
    counted: int,
    full_steps: int | None = None,
) -> dict[str, Any] | None:
    """Feed a closed round to the pacer; what it did, for the round's event (None: no pacer)."""
    if pacer is None:
        return None
    own = selector.t_budget
    if own is not None:
        pacer.value = own  # the selector's rule may have moved it since the last round
    before = pacer.value
    move = pacer.observe(
        RoundOutcome(
            dispatched=dispatched,
            succeeded=succeeded,
            counted=counted,
            target=config.num_participants,
            required=config.clients_required,
            full_steps=full_steps,
        )
    )
    set_budget = getattr(selector, "pace_budget", None)
    if own is not None and set_budget is not None:
        set_budget(pacer.value)
    return {"before": before, "after": pacer.value, "move": move}
