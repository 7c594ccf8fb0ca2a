"""The round state machine: pure, no I/O, no clock of its own.

A :class:`Collection` follows one round's replies (training updates or validation
results) from a set of assigned agents. Inputs are events with the current time;
the output is the phase, and the reason it closed::

    WAITING --accept--> WAITING | COMPLETE   (target reached, or nobody left pending)
    WAITING --lose----> WAITING | COMPLETE | FAILED
    WAITING --tick----> WAITING | COMPLETE | FAILED   (deadline passed)
    COMPLETE / FAILED   terminal: any further event raises IllegalTransition

A round closes as soon as ``target`` replies are in (with a wall clock the first K
arrivals are the K fastest), when every assigned agent has replied or been lost, or
when the deadline passes; it fails when it closes with fewer than ``required``.
The deadline arrives as a ``tick`` event: the machine never sleeps.

:class:`JobPhase` and :data:`JOB_TRANSITIONS` are the job-level states around rounds.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


class IllegalTransition(RuntimeError):
    """An event that the current state does not accept; the state is unchanged."""


class Phase(enum.Enum):
    WAITING = "waiting"
    COMPLETE = "complete"
    FAILED = "failed"


class Trigger(enum.Enum):
    ACCEPT = "accept"
    LOSE = "lose"
    TICK = "tick"


@dataclass
class Collection:
    assigned: frozenset[str]
    target: int
    required: int
    deadline: float | None
    phase: Phase = Phase.WAITING
    reason: str = ""
    accepted: list[str] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)
    # ``accepted`` as a set: is_pending is asked for every reply, O(1) at any fleet size.
    _accepted_set: set[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._accepted_set = set(self.accepted)

    @classmethod
    def start(
        cls, assigned: Iterable[str], *, target: int, required: int, deadline: float | None
    ) -> Collection:
        agents = frozenset(assigned)
        if target < 1 or required < 1:
            raise ValueError("target and required must be at least 1")
        collection = cls(agents, min(target, len(agents)) or 1, required, deadline)
        if not agents:
            collection._close("no agents assigned")
        return collection

    @property
    def pending(self) -> set[str]:
        return set(self.assigned) - self._accepted_set - self.lost

    def is_pending(self, agent: str | None) -> bool:
        return agent in self.assigned and agent not in self._accepted_set and agent not in self.lost

    @property
    def pending_count(self) -> int:
        # accepted and lost are disjoint subsets of assigned (only a pending agent moves).
        return len(self.assigned) - len(self._accepted_set) - len(self.lost)

    @property
    def closed(self) -> bool:
        return self.phase is not Phase.WAITING

    def accept(self, agent: str, now: float) -> Phase:
        return self._fire(Trigger.ACCEPT, agent, now)

    def lose(self, agent: str, now: float) -> Phase:
        return self._fire(Trigger.LOSE, agent, now)

    def tick(self, now: float) -> Phase:
        return self._fire(Trigger.TICK, None, now)

    def can_accept(self, agent: str) -> bool:
        return self.phase is Phase.WAITING and self.is_pending(agent)

    # -- transitions -------------------------------------------------------------------
    def _fire(self, trigger: Trigger, agent: str | None, now: float) -> Phase:
        handler = _TRANSITIONS.get((self.phase, trigger))
        if handler is None:
            raise IllegalTransition(f"{trigger.value} in phase {self.phase.value}")
        handler(self, agent, now)
        return self.phase

    def _on_accept(self, agent: str | None, now: float) -> None:
        if not self.is_pending(agent):
            raise IllegalTransition(f"agent {agent!r} is not pending in this round")
        assert agent is not None
        self.accepted.append(agent)
        self._accepted_set.add(agent)
        if len(self.accepted) >= self.target:
            self._close("buffer full")
        elif not self.pending_count:
            self._close("all replied")

    def _on_lose(self, agent: str | None, now: float) -> None:
        if agent is not None and self.is_pending(agent):
            self.lost.add(agent)
            if not self.pending_count:
                self._close("no agents left pending")

    def _on_tick(self, agent: str | None, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self._close("timeout")

    def _close(self, why: str) -> None:
        if len(self.accepted) >= self.required:
            self.phase, self.reason = Phase.COMPLETE, why
        else:
            self.phase = Phase.FAILED
            self.reason = f"{why}: {len(self.accepted)} of {self.required} required replies"


_TRANSITIONS: dict[tuple[Phase, Trigger], Callable[[Collection, str | None, float], None]] = {
    (Phase.WAITING, Trigger.ACCEPT): Collection._on_accept,
    (Phase.WAITING, Trigger.LOSE): Collection._on_lose,
    (Phase.WAITING, Trigger.TICK): Collection._on_tick,
}


class JobPhase(enum.Enum):
    PENDING = "pending"
    WAITING_FOR_AGENTS = "waiting_for_agents"
    TRAINING = "training"
    VALIDATING = "validating"
    FINISHED = "finished"
    FAILED = "failed"


JOB_TRANSITIONS: dict[JobPhase, frozenset[JobPhase]] = {
    JobPhase.PENDING: frozenset({JobPhase.WAITING_FOR_AGENTS, JobPhase.FAILED}),
    JobPhase.WAITING_FOR_AGENTS: frozenset(
        {JobPhase.TRAINING, JobPhase.VALIDATING, JobPhase.FINISHED, JobPhase.FAILED}
    ),
    JobPhase.TRAINING: frozenset(
        {
            JobPhase.TRAINING,
            JobPhase.VALIDATING,
            JobPhase.WAITING_FOR_AGENTS,
            JobPhase.FINISHED,
            JobPhase.FAILED,
        }
    ),
    JobPhase.VALIDATING: frozenset(
        {JobPhase.TRAINING, JobPhase.WAITING_FOR_AGENTS, JobPhase.FINISHED, JobPhase.FAILED}
    ),
    JobPhase.FINISHED: frozenset(),
    JobPhase.FAILED: frozenset(),
}


def advance(current: JobPhase, new: JobPhase) -> JobPhase:
    """Return ``new`` if the job may move there from ``current``, else raise."""
    if new not in JOB_TRANSITIONS[current]:
        raise IllegalTransition(f"job cannot go from {current.value} to {new.value}")
    return new
