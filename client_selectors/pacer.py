"""The Oort pacer, shared by Oort (on its duration percentile) and Bliss (on t_budget).

Once per selection the policy records one number: the *average* reward of its previous
picks that came back successfully (sum / (count + 1e-4), as in [O], so a round where none
came back records 0). Every ``step`` calls, once ``t >= 2 * step``, the pacer compares the
sums of the last two windows of ``step`` records, A (older) and B (newer):

- |B - A| <= 0.1 A  -> utility has stalled: relax, ``value += delta`` (capped at ``upper``);
- |B - A| >= 5 A    -> utility jumped: tighten, ``value = max(delta, value - delta)``.

Oort moves the duration percentile ``round_threshold`` (upper 100: no system penalty);
Bliss moves ``t_budget`` in seconds (no upper bound) and skips the rule while A == 0. Only
the last ``2 * step`` records are kept: the rule never looks further back.

:class:`BudgetPacer` is the job-level pacer every selector gets: it moves ``t_budget`` from
round outcomes (failed rounds widen it, rounds where K agents fit tighten it) within the
job's bounds. Pure: values in, values out, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

Move = Literal["relax", "tighten"]
BudgetMove = Literal["widen", "tighten"]


def mean_reward(rewards: Iterable[float]) -> float:
    """[O]'s round average: the sum over (count + 1e-4), 0 when nothing came back."""
    total = 0.0
    count = 1e-4
    for r in rewards:
        total += r
        count += 1.0
    return total / count


class Pacer:
    """A value (percentile or seconds) nudged by the window rule above."""

    def __init__(
        self,
        value: float,
        step: int,
        delta: float,
        upper: float | None = None,
        skip_when_zero: bool = False,
    ) -> None:
        self.value = float(value)
        self.step = int(step)
        self.delta = float(delta)
        self.upper = upper
        self.skip_when_zero = skip_when_zero
        self.history: list[float] = []

    def update(self, t: int, round_reward: float) -> Move | None:
        """Record this call's round reward and apply the rule at call number ``t``."""
        w = self.step
        self.history.append(float(round_reward))
        del self.history[: max(0, len(self.history) - 2 * w)]
        if t < 2 * w or t % w != 0 or len(self.history) < 2 * w:
            return None
        older = sum(self.history[:w])
        newer = sum(self.history[w:])
        if self.skip_when_zero and older == 0.0:
            return None
        change = abs(newer - older)
        if change <= 0.1 * older:
            relaxed = self.value + self.delta
            self.value = relaxed if self.upper is None else min(self.upper, relaxed)
            return "relax"
        if change >= 5.0 * older:
            self.value = max(self.delta, self.value - self.delta)
            return "tighten"
        return None

    def to_state(self) -> dict[str, object]:
        return {"value": self.value, "history": list(self.history)}

    def load_state(self, state: dict[str, object]) -> None:
        self.value = float(cast(float, state["value"]))
        self.history = [float(x) for x in cast(list[float], state["history"])]


# ---------------------------------------------------------------------- job budget pacer
@dataclass(frozen=True)
class RoundOutcome:
    """What one closed round says about its budget (adaptive rounds fill the budget).

    ``dispatched``: agents sent a task; ``succeeded``: successful updates received;
    ``counted``: those aggregated (on time, on the virtual clock still active when they
    finished, at most K); ``target``: updates the round wants (K); ``required``: fewest
    for the round to count (clients_required); ``full_steps``: counted updates that ran at
    least the job's ``local_steps`` (None: not known, the floor rule is off).
    """

    dispatched: int
    succeeded: int
    counted: int
    target: int
    required: int
    full_steps: int | None = None

    @property
    def short_of_steps(self) -> bool:
        """The median counted update ran fewer steps than the job asks for."""
        return self.full_steps is not None and 2 * self.full_steps < self.counted


@dataclass(frozen=True)
class BudgetBounds:
    """The job's limits and steps for its round budget, in seconds."""

    lower: float
    upper: float
    widen: float = 1.25
    tighten: float = 0.9

    def __post_init__(self) -> None:
        if not (0.0 < self.lower <= self.upper and math.isfinite(self.upper)):
            raise ValueError(f"budget bounds must be 0 < lower <= upper, got {self}")
        if not (self.widen > 1.0 and 0.0 < self.tighten < 1.0):
            raise ValueError(f"need widen > 1 and 0 < tighten < 1, got {self}")


class BudgetPacer:
    """A job-level ``t_budget`` moved by round outcomes, for every selector (issue 22).

    Each round an adaptive agent plans its work to end inside the budget, so a budget that
    is too tight shows as agents that cannot fit even a minimal update, and one that is too
    loose as every agent fitting:

    - fewer than ``required`` updates counted: the round failed, ``value * widen``: a fixed
      budget that is too tight fails round after round;
    - fewer than halfway from ``required`` to ``target`` counted: the next round may fail,
      ``value * sqrt(widen)``: how many agents fit swings with who is online, and a budget
      paced to the edge of failing fails every few rounds;
    - the median counted update ran fewer than the job's ``local_steps``: the budget has
      gone below the job's own work, each update carries less training than a
      non-adaptive one, and accuracy pays (Bliss on the FedScale-style fleet ended 1.0
      point lower at a 19-23 s budget where the median kept agent ran 3-4 of 5 steps):
      ``value * sqrt(widen)``. This is the floor that keeps adaptive training from costing
      accuracy: the budget settles where the median kept agent still does the job's steps;
    - at least ``target`` (K) agents succeeded: the round got everything it wants inside
      the budget, the over-committed agents only made it more certain, so it can be
      shorter: ``value * tighten``;
    - otherwise (between halfway and K counted): keep it. Fewer than K updates is what a
      tight budget buys: shorter rounds for fewer updates.

    Adaptive agents fill whatever budget they get with more local steps, so they do not
    finish "early" on their own: a budget that is never tightened never binds, and
    adaptive rounds then last as long as fixed ones (the earlier study's finding). This
    pacer drives the budget to where it binds, and stops where the job's
    ``clients_required`` and ``t_budget_min`` say it must.

    The value stays within ``[lower, upper]``. Multiplicative steps make the rule the same
    for a 5 s and a 500 s budget; widening faster than tightening (1.25 vs 0.9 per round)
    keeps failed rounds rare: one failure undoes two tightenings.
    Bliss paces its own ``t_budget`` (Oort's utility rule); the job runner then uses the
    selector's value and this pacer stays out.
    """

    def __init__(self, value: float, bounds: BudgetBounds) -> None:
        self.bounds = bounds
        self.value = min(bounds.upper, max(bounds.lower, float(value)))

    def observe(self, outcome: RoundOutcome) -> BudgetMove | None:
        """Move the budget after a closed round; returns what it did."""
        b = self.bounds
        if outcome.counted < outcome.required:
            factor, move = b.widen, "widen"
        elif 2 * outcome.counted < outcome.required + outcome.target or outcome.short_of_steps:
            factor, move = math.sqrt(b.widen), "widen"
        elif outcome.succeeded >= outcome.target:
            factor, move = b.tighten, "tighten"
        else:
            return None
        moved = min(b.upper, max(b.lower, self.value * factor))
        if moved == self.value:
            return None
        self.value = moved
        return cast(BudgetMove, move)

    def to_state(self) -> dict[str, object]:
        return {"value": self.value}

    def load_state(self, state: dict[str, object]) -> None:
        value = float(cast(float, state["value"]))
        self.value = min(self.bounds.upper, max(self.bounds.lower, value))
