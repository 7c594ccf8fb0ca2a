"""Which agents have one job's tasks out: what the multi-job scheduler is told (pure).

The scheduler (:mod:`coordinator.job_leases`) grants each job agents and must know which
ones are still busy with it: the round's dispatched agents, over-committed stragglers of a
closed round until their late answer or the round's deadline, and the outstanding
validation's agents. The flow keeps this book; the adapter tells the job's lease. No I/O,
no clock read: times are passed in (monotonic seconds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class AgentHolds:
    training: list[str] = field(default_factory=list)  # dispatched, the round collecting
    straggling: dict[str, float] = field(default_factory=dict)  # agent -> deadline

    def dispatched(self, agents: Iterable[str]) -> None:
        self.training = list(agents)

    def round_closed(self, pending: Iterable[str], deadline: float | None) -> None:
        """The round closed: agents still training straggle until its deadline."""
        self.straggling.update(dict.fromkeys(pending, deadline or 0.0))
        self.training = []

    def answered(self, agent: str) -> bool:
        """A straggler's late update came: True when it was held (it is free now)."""
        return self.straggling.pop(agent, None) is not None

    def expire(self, now: float) -> bool:
        """Forget stragglers past their deadline; True when any was (they go back)."""
        before = len(self.straggling)
        self.straggling = {a: d for a, d in self.straggling.items() if d > now}
        return len(self.straggling) < before

    def held(self, now: float, validating: Iterable[str]) -> list[str]:
        """Every agent with this job's tasks out now."""
        self.expire(now)
        return list(dict.fromkeys([*self.training, *self.straggling, *validating]))

    def busy(self, now: float, later: float, validating: Iterable[str]) -> dict[str, float]:
        """Agents that may still work on this job, and until when (the job is ending).

        Stragglers until their deadline; the round's and the validation's pending agents
        (a job cancelled mid-round) until ``later``.
        """
        busy = {a: d for a, d in self.straggling.items() if d > now}
        for agent in [*self.training, *validating]:
            busy.setdefault(agent, later)
        return busy
