"""Many jobs, one device pool: which agents each job may sample now (pure; Propius-style).

The scheduler knows the pool (an :class:`AgentTable` of online agents and what they
advertise), the jobs (their ``requires:``, agents per round, rounds left) and which agents
each job holds (tasks out). A job asks :meth:`Scheduler.grant` when its round starts; its
selector (Oort, Bliss, ...) chooses within the grant, and the job then :meth:`holds` the
agents it sent tasks to until the round (or validation) closes.

The rules, every decision:

1. An agent is held by at most ``capacity`` jobs (1 unless it advertises more); a hold
   past that raises :class:`SchedulerError` and changes nothing. Jobs holding agents are
   mid-round: they claim nothing more.
2. The other jobs are ordered by the policy and, in that order, each *claims* up to its
   demand among the free agents that meet its requirements (a job whose requirements too
   few agents meet claims nothing: it cannot run, and must not block the others). A claim
   stands even when it is too small to start a round: the head of the queue keeps what
   it has gathered (no starvation of large jobs).
3. The asking job is granted its claim plus every free eligible agent nobody claimed, so
   its selector chooses freely when the pool is not contended. Grants may overlap; holds
   cannot (grant, select and hold happen with no wait in between).

Policies (ALGORITHMS.md 5.4): ``fifo`` by arrival; ``srsf`` shortest remaining service
(rounds left x agents per round) first; ``random`` a seeded score per job, drawn at
arrival; ``scarcity`` Propius's inverse resource scarcity: jobs whose eligible pool is the
smallest fraction of the fleet first (then smaller demand, then arrival), each taking the
agents fewest other waiting jobs could use. Other policies claim agents in a seeded
random order, so claims are not biased towards low ids.

Errors: ``SchedulerError`` (a ValueError): an unknown policy or job, or a hold that would
give an agent to more jobs than it takes.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from coordinator.agent_table import AgentTable
from coordinator.eligibility import Requirements


class SchedulerError(ValueError):
    """A local fault: a bad policy, an unknown job, a hold past an agent's capacity."""


class Policy(enum.Enum):
    FIFO = "fifo"
    SRSF = "srsf"
    RANDOM = "random"
    SCARCITY = "scarcity"


@dataclass(frozen=True)
class JobDemand:
    """What one job asks of the pool."""

    job: str
    requirements: Requirements = field(default_factory=Requirements)
    demand: int = 1  # agents a round asks (floor(K x overcommitment))
    needed: int = 1  # the fewest agents it starts a round with
    remaining_rounds: int = 1

    @property
    def remaining_service(self) -> int:
        return self.remaining_rounds * self.demand


@dataclass(frozen=True)
class Grant:
    """The agents a job may sample now; ``reason`` says why it must wait (None: it can run)."""

    job: str
    agents: tuple[str, ...]
    reason: str | None
    eligible: int


@dataclass
class _Job:
    demand: JobDemand
    arrival: int
    score: float


class Scheduler:
    def __init__(self, policy: Policy | str = Policy.FIFO, *, seed: int = 0) -> None:
        try:
            self.policy = Policy(policy)
        except ValueError as exc:
            names = [p.value for p in Policy]
            raise SchedulerError(f"unknown policy {policy!r}; use one of {names}") from exc
        self._rng = random.Random(seed)
        self._seed = seed
        self._arrivals = 0
        self.jobs: dict[str, _Job] = {}
        self.holds: dict[str, frozenset[str]] = {}
        self._holders: dict[str, set[str]] = {}  # agent -> the jobs holding it
        self._held_at: dict[str, np.ndarray] = {}  # job -> table positions it holds
        self.table = AgentTable([])
        self._held = np.zeros(0, dtype=np.int64)
        self._claim_order = np.zeros(0, dtype=np.int64)

    # -- the pool ----------------------------------------------------------------------
    def set_table(self, table: AgentTable) -> None:
        """A new pool (agents came or went); holds carry over by agent id."""
        self.table = table
        self._held = np.zeros(len(table), dtype=np.int64)
        for job, agents in self.holds.items():
            self._held_at[job] = table.positions(agents)
            np.add.at(self._held, self._held_at[job], 1)
        self._claim_order = np.random.default_rng(self._seed).permutation(len(table))

    # -- jobs --------------------------------------------------------------------------
    def add_job(self, demand: JobDemand) -> None:
        if demand.job in self.jobs:
            self.jobs[demand.job].demand = demand
            return
        self.jobs[demand.job] = _Job(demand, self._arrivals, self._rng.random())
        self._arrivals += 1
        self.holds.setdefault(demand.job, frozenset())

    def update_job(self, demand: JobDemand) -> None:
        """New progress (rounds left) for a known job; arrival and score stay."""
        self._job(demand.job).demand = demand

    def remove_job(self, job: str, keep: Iterable[str] = ()) -> None:
        """The job ended: it leaves the queue and lets go of its agents but ``keep``.

        ``keep``: agents still working on its last tasks (stragglers); they stay held
        until :meth:`release` lets them go.
        """
        self.jobs.pop(job, None)
        self.hold(job, keep)
        if not self.holds[job]:
            self.release(job)

    def release(self, job: str, agents: Iterable[str] | None = None) -> None:
        """An ended job lets go of ``agents`` (None: all) it kept; a running job is untouched."""
        if job in self.jobs or job not in self.holds:
            return
        self.hold(job, () if agents is None else self.holds[job] - frozenset(agents))
        if not self.holds[job]:
            del self.holds[job]
            self._held_at.pop(job, None)

    # -- holds -------------------------------------------------------------------------
    def hold(self, job: str, agents: Iterable[str]) -> None:
        """``job`` now holds exactly ``agents`` (tasks out); () lets go of all of them."""
        new = frozenset(agents)
        old = self.holds.get(job, frozenset())
        for agent in new - old:
            holders = self.holders(agent)
            attributes = self.table.attributes.get(agent)
            capacity = attributes.capacity if attributes is not None else 1
            if len(holders) >= capacity:
                raise SchedulerError(
                    f"agent {agent} is held by {sorted(holders)} (capacity {capacity}); "
                    f"job {job} may not hold it too"
                )
        for agent in old - new:
            self._holders[agent].discard(job)
            if not self._holders[agent]:
                del self._holders[agent]
        for agent in new - old:
            self._holders.setdefault(agent, set()).add(job)
        if job in self._held_at:
            np.subtract.at(self._held, self._held_at[job], 1)
        self._held_at[job] = self.table.positions(new)
        np.add.at(self._held, self._held_at[job], 1)
        self.holds[job] = new

    def holders(self, agent: str) -> set[str]:
        return set(self._holders.get(agent, ()))

    # -- decisions ---------------------------------------------------------------------
    def grant(self, job: str, candidates: Sequence[str] | None = None) -> Grant:
        """The agents ``job`` may sample now, among ``candidates`` (default: the pool)."""
        state = self._job(job)
        table = self.table
        mask = table.mask(state.demand.requirements)
        avail = table.capacity - self._held
        own = self._held_at.get(job, np.zeros(0, dtype=np.int64))
        avail[own] += 1  # its own held agents are free to it
        claims = self._claim(job, avail)
        chosen = np.zeros(len(table), dtype=bool)
        chosen[claims] = True
        chosen |= mask & (avail > 0)  # the surplus nobody claimed
        if candidates is not None:
            allowed = np.zeros(len(table), dtype=bool)
            allowed[table.positions(candidates)] = True
            chosen &= allowed
        agents = tuple(table.ids_at(chosen))
        eligible = int(mask.sum())
        reason = None
        if len(agents) < state.demand.needed:
            reason = self._why_waiting(state.demand, eligible, len(agents))
        return Grant(job, agents, reason, eligible)

    def plan(self) -> dict[str, Grant]:
        """Every job's grant as if each asked now (for status views; nothing changes)."""
        return {job: self.grant(job) for job in self.jobs}

    def order(self) -> list[str]:
        """The jobs in policy order (first served first)."""
        table = self.table
        n = max(len(table), 1)

        def key(job: _Job) -> tuple[float, ...]:
            d = job.demand
            match self.policy:
                case Policy.FIFO:
                    return (job.arrival,)
                case Policy.SRSF:
                    return (d.remaining_service, job.arrival)
                case Policy.RANDOM:
                    return (job.score, job.arrival)
                case Policy.SCARCITY:
                    share = float(table.mask(d.requirements).sum()) / n
                    return (share, d.demand, job.arrival)

        return [j.demand.job for j in sorted(self.jobs.values(), key=key)]

    def _claim(self, asking: str, avail: np.ndarray) -> np.ndarray:
        """Walk the queue: each waiting job claims its demand; return ``asking``'s claim.

        ``avail`` (free places per agent) is used up by the claims, so afterwards it
        holds what nobody claimed.
        """
        table = self.table
        waiting = [job for job in self.order() if job == asking or not self.holds.get(job)]
        agent_order = self._claim_order
        if self.policy is Policy.SCARCITY:
            contention = np.zeros(len(table), dtype=np.int64)
            for job in waiting:
                contention += table.mask(self.jobs[job].demand.requirements)
            agent_order = np.argsort(contention, kind="stable")
        mine = np.zeros(0, dtype=np.int64)
        for job in waiting:
            d = self.jobs[job].demand
            mask = table.mask(d.requirements)
            free_in_order = agent_order[(mask & (avail > 0))[agent_order]]
            if int(mask.sum()) < d.needed:
                continue  # cannot run at all now: it must not hold up the others
            pick = free_in_order[: max(d.demand, d.needed)]
            avail[pick] -= 1
            if job == asking:
                mine = pick
        return mine

    def _why_waiting(self, d: JobDemand, eligible: int, granted: int) -> str:
        if eligible < d.needed:
            return (
                f"requirements ({d.requirements.describe()}) met by {eligible} of "
                f"{len(self.table)} online agents; the job needs {d.needed}"
            )
        mask = self.table.mask(d.requirements)
        busy = sorted(
            other
            for other, held in self._held_at.items()
            if other != d.job and bool(mask[held].any())
        )
        ahead = "held by jobs " + ", ".join(busy) if busy else "claimed by jobs ahead in the queue"
        return f"{granted} of the {d.needed} agents it needs are free; the others are {ahead}"

    def _job(self, job: str) -> _Job:
        try:
            return self.jobs[job]
        except KeyError:
            raise SchedulerError(f"unknown job {job!r}") from None
