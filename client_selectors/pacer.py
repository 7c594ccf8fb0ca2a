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
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, cast

Move = Literal["relax", "tighten"]


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
