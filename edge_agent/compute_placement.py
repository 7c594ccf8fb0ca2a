"""Where an agent's train or validate computation runs: on the event loop or in a thread."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, TypeVar

from edge_agent.updates import timed

# A computation runs on the event loop itself when the same kind last took under
# INLINE_CPU_SECONDS of CPU and INLINE_WALL_SECONDS of wall time. Handing a few ms of
# training to a worker thread costs more than it saves: measured with 50 agent processes on
# two cores (digits MLP, 20 steps, ~4 ms of CPU a round), rounds took 0.23-0.32 s inline
# against 0.29-0.42 s through asyncio.to_thread, in back-to-back runs. The wall bound is
# loose on purpose: on a shared CPU the wall time is mostly waiting for a core (10 ms of CPU
# took 200-350 ms of wall with 50 agents on 2 cores; a 0.25 s bound sent about half the
# training to a thread), and blocking the loop for up to 2 s delays nothing that matters
# (keep-alives are 15 s apart, tasks run one at a time). The CPU bound is above the first
# round's cost (torch warms up: 40-70 ms of CPU for that MLP), so the second round already
# runs inline. Longer work, work not measured yet and a custom train_fn (it may wait on
# something only the loop can deliver) stay off it.
INLINE_CPU_SECONDS = 0.1
INLINE_WALL_SECONDS = 2.0

T = TypeVar("T")


class ComputePlacement:
    def __init__(self) -> None:
        # (CPU, wall) seconds the last computation of each kind took.
        self._cost: dict[str, tuple[float, float]] = {}

    def inline(self, kind: str) -> bool:
        cpu, wall = self._cost.get(kind, (math.inf, math.inf))
        return cpu < INLINE_CPU_SECONDS and wall < INLINE_WALL_SECONDS

    async def run(self, kind: str, fn: Callable[..., T], *args: Any, may_inline: bool = True) -> T:
        """``fn(*args)`` on the loop when it was short last time, else in a worker thread."""
        if may_inline and self.inline(kind):
            result, cost = timed(fn, *args)
        else:
            result, cost = await asyncio.to_thread(timed, fn, *args)
        self._cost[kind] = cost
        return result
