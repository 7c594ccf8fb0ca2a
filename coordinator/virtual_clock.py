"""Virtual-clock round planning (pure): who to dispatch, who to keep, how long a round lasts.

Non-adaptive path (FedScale): of the sampled candidates, drop those inactive at the start
or at start + their estimated duration, dispatch the K fastest, and the round lasts as
long as the K-th fastest. Adaptive path (Bliss): everyone sampled trains within the
budget; of the successful replies keep the K fastest that are still active when they
finish, and the round lasts as long as the slowest kept one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

IsActive = Callable[[str, float], bool]


@dataclass(frozen=True)
class VirtualPlan:
    dispatched: list[str]  # fastest first
    durations: dict[str, float]  # every candidate's estimate
    inactive: list[str]  # offline at start or at start + duration
    not_dispatched: list[str]  # active but slower than the K-th
    round_duration: float


def plan_fastest(
    estimates: Mapping[str, float], start: float, k: int, is_active: IsActive
) -> VirtualPlan:
    """Keep the ``k`` fastest candidates that are active at start and at start + duration."""
    active, inactive = [], []
    for agent, duration in estimates.items():
        if (
            math.isfinite(duration)
            and is_active(agent, start)
            and is_active(agent, start + duration)
        ):
            active.append(agent)
        else:
            inactive.append(agent)
    active.sort(key=lambda a: (estimates[a], a))
    chosen = active[:k]
    duration = estimates[chosen[-1]] if chosen else 0.0
    return VirtualPlan(chosen, dict(estimates), sorted(inactive), active[k:], duration)


def keep_fastest_replies(
    durations: Mapping[str, float], start: float, k: int, is_active: IsActive
) -> VirtualPlan:
    """Adaptive path: the ``k`` fastest successful replies still active when they finish."""
    return plan_fastest(durations, start, k, is_active)
