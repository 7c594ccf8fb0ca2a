"""The service's side of scheduling: one :class:`Scheduler` over the registry's online agents.

Each job runner gets a :class:`JobLease` bound to its job, the seam between the round and
the pool: ``grant(candidates)`` filters the agents the round would sample (online, and on
the virtual clock active) down to those the scheduler lets it have now; ``hold(agents)``
says which agents have the job's tasks out (training and validation), ``hold(())`` lets
them go. Grant, selection and hold happen with no ``await`` in between, so two jobs can
never hold one agent beyond what it advertises. No I/O here; the service publishes the
waiting reasons this keeps (:attr:`PoolLeases.waiting`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from coordinator.agent_table import AgentTable
from coordinator.config import JobConfig
from coordinator.eligibility import attributes_of
from coordinator.registry import AgentRegistry
from coordinator.scheduler import JobDemand, Policy, Scheduler

log = logging.getLogger("coordinator.jobs")  # shown by `coordinator serve` (job_control)


class JobLease(Protocol):
    """What a job runner may ask of the pool."""

    def grant(self, candidates: Sequence[str]) -> list[str]: ...

    def hold(self, agents: Iterable[str]) -> None: ...


class PoolLeases:
    """A scheduler kept in step with the registry; one lease per running job."""

    def __init__(
        self,
        registry: AgentRegistry,
        policy: Policy | str = Policy.FIFO,
        *,
        seed: int = 0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.scheduler = Scheduler(policy, seed=seed)
        self.waiting: dict[str, str] = {}
        self.on_change = on_change
        self._configs: dict[str, JobConfig] = {}
        self._progress: dict[str, Callable[[], int]] = {}
        self._online: list[str] | None = None

    @property
    def policy(self) -> Policy:
        return self.scheduler.policy

    def add(self, config: JobConfig, rounds_left: Callable[[], int]) -> JobLease:
        self._configs[config.name] = config
        self._progress[config.name] = rounds_left
        self.scheduler.add_job(self._demand(config.name))
        return _BoundLease(self, config.name)

    def remove(self, job: str, keep: Iterable[str] = ()) -> None:
        """The job ended; ``keep``: agents still busy with its tasks, held until released."""
        self._refresh()
        self.scheduler.remove_job(job, keep)
        self._configs.pop(job, None)
        self._progress.pop(job, None)
        self._set_waiting(job, None)

    def grant(self, job: str, candidates: Sequence[str] | None = None) -> list[str]:
        self._refresh()
        self.scheduler.update_job(self._demand(job))
        grant = self.scheduler.grant(job, candidates)
        self._set_waiting(job, grant.reason)
        return list(grant.agents)

    def release(self, job: str, agents: Iterable[str] | None = None) -> None:
        """An ended job's kept agents answered (or their deadline passed): free them."""
        self._refresh()
        self.scheduler.release(job, agents)

    def hold(self, job: str, agents: Iterable[str]) -> None:
        self._refresh()
        self.scheduler.hold(job, agents)

    def holder_of(self, agent: str) -> set[str]:
        return self.scheduler.holders(agent)

    def _demand(self, job: str) -> JobDemand:
        config = self._configs[job]
        return JobDemand(
            job,
            config.requires,
            demand=config.dispatch_count,
            needed=config.agents_needed,
            remaining_rounds=max(self._progress[job](), 0),
        )

    def _refresh(self) -> None:
        online = self.registry.online()
        if online is self._online:  # the registry hands out one list until someone comes or goes
            return
        self._online = online
        self.scheduler.set_table(
            AgentTable([attributes_of(a, self.registry.profile(a)) for a in online])
        )

    def _set_waiting(self, job: str, reason: str | None) -> None:
        if self.waiting.get(job) == reason:
            return
        if reason is None:
            self.waiting.pop(job, None)
        else:
            self.waiting[job] = reason
            log.info("job %s waits: %s", job, reason)
        if self.on_change is not None:
            self.on_change()


class _BoundLease:
    def __init__(self, leases: PoolLeases, job: str) -> None:
        self._leases = leases
        self.job = job

    def grant(self, candidates: Sequence[str]) -> list[str]:
        return self._leases.grant(self.job, candidates)

    def hold(self, agents: Iterable[str]) -> None:
        self._leases.hold(self.job, agents)
