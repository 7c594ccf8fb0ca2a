"""The job's flow beside its rounds: the validation, ROUND_END, the scheduler's seam.

:class:`ValidationFlow` is the base of :class:`coordinator.round_flow.JobFlow` (the
rounds); like it, it never awaits, reads no clock and touches no socket, only yields
commands (:mod:`coordinator.round_commands`). A round's model is validated by agents while
the next round trains (``eval_overlap``) or before its ROUND_END; the agents it asks, the
round's and its stragglers are what the multi-job scheduler is told this job holds.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from coordinator import metrics
from coordinator.agent_holds import AgentHolds
from coordinator.aggregation.trust import summarize
from coordinator.config import JobConfig
from coordinator.events import EventName
from coordinator.round_commands import (
    Clock,
    Command,
    Drain,
    Emit,
    GrantAgents,
    HoldAgents,
    ReadClock,
    ReadOnline,
    SendTasks,
    Until,
)
from coordinator.round_engine import RoundEngine
from coordinator.round_plan import RoundPlanner
from coordinator.round_record import checked_entry
from coordinator.round_state import JobPhase
from coordinator.update_check import Assignment
from fedbus.protocol.messages import TrainConfig, ValidateRequest

Flow = Generator[Command, Any, Any]


@dataclass
class _PendingEntry:
    """The history entry of a round whose validation is outstanding, and when it ended."""

    entry: dict[str, Any]  # accuracy and loss are filled in when the validation closes
    virtual_time: float | None


class ValidationFlow:
    """The validation's state and steps; :class:`~coordinator.round_flow.JobFlow` sets
    these attributes and provides :meth:`set_phase` and :meth:`train_config`."""

    config: JobConfig
    engine: RoundEngine
    plan: RoundPlanner  # the job's decisions (trusted weights)
    rng: random.Random  # validation sampling only
    holds: AgentHolds  # what the multi-job scheduler is told is busy
    model_version: int
    virtual_time: float | None
    last_accuracy: float | None
    last_loss: float | None
    _pending: _PendingEntry | None

    def set_phase(self, phase: JobPhase) -> None:
        raise NotImplementedError

    def train_config(self, local_steps: int | None = None, keep_frac: float = 1.0) -> TrainConfig:
        raise NotImplementedError

    # -- the multi-job scheduler's seam ------------------------------------------------------
    def granted(self, candidates: list[str]) -> Flow:
        """``candidates`` the scheduler lets this job ask now (stragglers past their
        deadline are handed back first)."""
        clock: Clock = yield ReadClock()
        if self.holds.expire(clock.monotonic):
            yield HoldAgents(self.held(clock.monotonic))
        granted: list[str] = yield GrantAgents(candidates)
        return granted

    def held(self, now: float) -> list[str]:
        """Every agent with this job's tasks out: the round's, stragglers, validation's."""
        return self.holds.held(now, self.engine.validation_agents[0])

    def hold(self) -> Flow:
        yield HoldAgents(self.held((yield ReadClock()).monotonic))

    def busy(self, now: float) -> dict[str, float]:
        """Agents that may still work on this job's tasks, and until when (the job ends):
        stragglers until their deadline; a cancelled round's and validation's agents until
        a timeout from ``now``."""
        later = now + max(self.config.round_timeout, self.config.eval_timeout)
        return self.holds.busy(now, later, self.engine.validation_agents[1])

    def emit_round_end(self, entry: dict[str, Any], virtual_time: float | None) -> Flow:
        round_ = entry["round"]
        if entry.get("accuracy") is not None:
            data = {"accuracy": entry["accuracy"], "loss": entry["loss"]}
            yield Emit(EventName.TEST_RESULT, round_, data, virtual_time)
        name = EventName.ROUND_END if entry["ok"] else EventName.ROUND_FAILED
        yield Emit(name, round_, checked_entry(entry), virtual_time)

    # -- the validation --------------------------------------------------------------------
    def start_validation(self, round_: int, entry: dict[str, Any], *, overlap: bool) -> Flow:
        """Validate the model just published; results are taken as they come.

        ``overlap``: the next round follows at once, and its train tasks carry the requests
        of the agents it trains (:meth:`ask_validation`); otherwise everyone is asked now.
        """
        self.set_phase(JobPhase.VALIDATING)
        online: list[str] = yield from self.granted((yield ReadOnline()))
        most = self.config.eval_max_clients
        agents = online if len(online) <= most else sorted(self.rng.sample(online, most))
        self.engine.open_validation(round_, agents, self.config.eval_timeout)
        self._pending = _PendingEntry(entry, self.virtual_time)
        yield from self.hold()
        if not overlap:
            yield from self.ask_validation([])

    def ask_validation(self, training: list[str], *, in_update: bool = False) -> Flow:
        """Ask the outstanding validation's agents: ``training`` ones in their train task.

        Returns the requests to fold into those train tasks (answered inside the update
        with ``in_update``); everyone else gets a validate task now. The validated model is
        the one the train tasks start from (same version).
        """
        unasked = self.engine.unasked
        round_ = self.engine.validation_round
        if not unasked or round_ is None:
            return {}
        trained = set(training)
        alone = [a for a in unasked if a not in trained]
        requests: dict[str, ValidateRequest] = {}
        asked: dict[str, Assignment] = {}
        for agent in (a for a in unasked if a in trained):
            task_id = uuid.uuid4().hex[:16]
            requests[agent] = ValidateRequest(task_id=task_id, round=round_, in_update=in_update)
            asked[agent] = Assignment(agent, task_id, round_, self.model_version)
        if alone:
            # Not waiting for the broker's acknowledgements: with 50 agents waking up on two
            # cores they took ~100 ms, all of it between this round and the next.
            configs = dict.fromkeys(alone, self.train_config())
            timeout = self.config.eval_timeout
            asked.update((yield SendTasks(round_, "validate", alone, configs, timeout, wait=False)))
        clock: Clock = yield ReadClock()
        self.engine.ask(asked, clock.monotonic, requests if in_update else ())
        return requests

    def finish_validation(self, *, emit: bool = True) -> Flow:
        """Wait for the outstanding validation to close, record it and end its round."""
        if not self.engine.has_validation:
            return
        yield from self.ask_validation([])  # no next round took the requests along
        yield Drain(Until.VALIDATION_CLOSED)
        closed = self.engine.finish_validation()
        pending, self._pending = self._pending, None
        yield from self.hold()
        assert pending is not None
        answered = [r for r in closed.results.values() if r.num_examples > 0]
        entry = pending.entry
        if answered:
            # Forged results (accuracy 1.0, 10^12 examples) must not make the job's figure:
            # weights capped as updates' are, and the median and spread beside the mean (#16).
            weights = self.plan.trusted_weights(
                [r.agent for r in answered],
                [r.num_examples for r in answered],
                self.config.trust.metric_median_cap,
            )
            accuracies = [r.accuracy for r in answered]
            entry.update(summarize(accuracies, weights).as_fields("accuracy"))
            entry["accuracy"] = float(np.average(accuracies, weights=weights))
            entry["loss"] = float(np.average([r.loss for r in answered], weights=weights))
            entry["eval_agents"] = len(answered)
            entry.update(
                metrics.round_entry(
                    {r.agent: r.metrics for r in answered},
                    {r.agent: r.num_examples for r in answered},
                )
            )
            self.last_accuracy, self.last_loss = entry["accuracy"], entry["loss"]
        if emit:
            yield from self.emit_round_end(entry, pending.virtual_time)
