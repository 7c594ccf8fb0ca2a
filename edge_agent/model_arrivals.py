"""When each job's model arrived, and so when a task's round began for the agent.

Pure bookkeeping on times the caller reads from its monotonic clock: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# A task received within this long of its model's last byte came with it (round_start).
MODEL_THEN_TASK_SECONDS = 1.0


@dataclass
class ModelArrivals:
    # job -> (first byte, bytes so far) of a model still arriving
    _arriving: dict[str, tuple[float, int]] = field(default_factory=dict)
    # job -> (version, first byte, last byte) of the last model fetched
    _fetched: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    _idle_since: float = -math.inf

    def piece(self, job: str, at: float, size: int) -> tuple[float, int]:
        """A model message (whole or a chunk) of ``size`` bytes came in at ``at``; returns
        the download's (first byte time, bytes so far)."""
        first, held = self._arriving.get(job, (at, 0))
        self._arriving[job] = (first, held + size)
        return self._arriving[job]

    def fetched(self, job: str, version: int, at: float) -> tuple[int, float] | None:
        """A new model version was completed at ``at``: its (bytes, seconds) download."""
        arriving = self._arriving.pop(job, None)
        if arriving is None:
            return None
        first, size = arriving
        self._fetched[job] = (version, first, at)
        return size, at - first

    def dropped(self, job: str) -> None:
        """What arrived was not a new model (a version already held, or refused)."""
        self._arriving.pop(job, None)

    def idle(self, at: float) -> None:
        """The agent finished a task at ``at``."""
        self._idle_since = at

    def round_start(self, job: str, version: int, received: float) -> float:
        """When a task received at ``received`` began its round for the agent: its receipt,
        or the start of its model's download when that belongs to the same round.

        The coordinator publishes a round's model just before its tasks, so on a slow link
        the task arrives right behind the model, and fetching it is part of the round's
        time (and budget). A model fetched long before the task (the retained one, at
        connection) or before the agent's previous task ended is not.
        """
        fetched = self._fetched.get(job)
        if fetched is None:
            return received
        fetched_version, first, last = fetched
        same_round = (
            fetched_version == version
            and first > self._idle_since
            and received - last <= MODEL_THEN_TASK_SECONDS
        )
        return min(received, first) if same_round else received
