"""The job's rounds, in order, as a sans-I/O flow: commands out, results in.

A reader looking for "what happens in a round" reads :meth:`JobFlow.round`. It never
awaits, reads no clock and touches no socket: each step that needs the outside world is a
command (:mod:`coordinator.round_commands`) that the flow yields and the adapter
(:class:`coordinator.job_runner.JobRunner`) carries out, sending back the result. The
replies within a round are the round engine's (:mod:`coordinator.round_engine`); the
decisions (who trains, on what, who is kept) the planner's (:mod:`coordinator.round_plan`).

A round: wait for enough agents if need be; select; plan; ROUND_BEGIN; ask the
outstanding validation's agents (folded into train tasks where they train); send train
tasks; collect until the engine closes the round; keep, aggregate, feed the selector;
checkpoint (write-ahead), then publish the model; finish the previous validation; start
this round's (server-side, overlapped, or waited for); ROUND_END; status.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from client_selectors import ClientSelector
from coordinator.config import JobConfig
from coordinator.events import EventName
from coordinator.round_commands import (
    Aggregate,
    Clock,
    Command,
    CrashPoint,
    Drain,
    Emit,
    EvaluateOnServer,
    PrepareRows,
    PublishModel,
    PublishStatus,
    ReadClock,
    ReadOnline,
    SaveCheckpoint,
    SendTasks,
    Until,
)
from coordinator.round_engine import RoundEngine
from coordinator.round_plan import RoundPlanner
from coordinator.round_record import CheckpointState, RoundEnd, checked_entry, round_entry
from coordinator.round_state import JobPhase, Phase, advance
from coordinator.round_verdicts import Reply
from coordinator.update_check import Assignment
from fedbus.protocol.messages import TrainConfig, ValidateRequest

Flow = Generator[Command, Any, Any]

CRASH_POINTS = ("tasks_published", "aggregated", "checkpointed", "model_published", "validating")
"""The round's command boundaries, in order, at which a :class:`CrashPoint` is yielded."""


@dataclass
class _PendingEntry:
    """The history entry of a round whose validation is outstanding, and when it ended."""

    entry: dict[str, Any]  # accuracy and loss are filled in when the validation closes
    virtual_time: float | None


class JobFlow:
    """One job's state between rounds, and the generators that move it on."""

    def __init__(
        self, config: JobConfig, selector: ClientSelector[Any], planner: RoundPlanner
    ) -> None:
        self.config = config
        self.selector = selector
        self.plan = planner
        self.engine = RoundEngine(config.name)
        self.phase = JobPhase.PENDING
        self.history: list[dict[str, Any]] = []
        self.completed_rounds = 0
        self.model_version = 0
        self.virtual_time = 0.0 if config.clock == "virtual" else None
        self.last_accuracy: float | None = None
        self.last_loss: float | None = None
        self.rng = random.Random(config.seed)  # validation sampling only
        self._pending: _PendingEntry | None = None

    def set_phase(self, phase: JobPhase) -> None:
        self.phase = advance(self.phase, phase)

    def snapshot(self) -> CheckpointState:
        """The state a checkpoint keeps (the model itself is the adapter's)."""
        return CheckpointState(
            job=self.config.name,
            completed_rounds=self.completed_rounds,
            model_version=self.model_version,
            history=self.history,
            rejected=dict(self.engine.rejected),
            virtual_time=self.virtual_time,
            last_accuracy=self.last_accuracy,
            last_loss=self.last_loss,
            registered=sorted(self.plan.registered),
            selector=self.selector.state(),
            rng=_list_state(self.rng.getstate()),
        )

    def restore(self, state: CheckpointState) -> None:
        """Resume from a checkpoint's state: exactly where that round ended."""
        self.completed_rounds, self.model_version = state.completed_rounds, state.model_version
        self.history = list(state.history)
        self.engine.rejected = Counter(state.rejected)
        self.virtual_time = state.virtual_time
        self.last_accuracy, self.last_loss = state.last_accuracy, state.last_loss
        self.plan.registered = set(state.registered)
        self.selector = type(self.selector).from_state(state.selector)
        self.rng.setstate(_tuple_state(state.rng))

    # -- the job ---------------------------------------------------------------------------
    def run(self) -> Flow:
        """Wait for agents, run every round, finish; returns True when every round ran."""
        if not (yield from self.wait_for_agents()):
            self.set_phase(JobPhase.FAILED)
            yield Emit(EventName.JOB_FAILED, self.completed_rounds, {"reason": "no agents"})
            yield PublishStatus("failed")
            return False
        while self.completed_rounds < self.config.rounds:
            yield from self.round(self.completed_rounds + 1)
        yield from self.finish_validation()
        self.set_phase(JobPhase.FINISHED)
        yield Emit(
            EventName.JOB_END,
            self.completed_rounds,
            {
                "accuracy": self.last_accuracy,
                "loss": self.last_loss,
                "rejected": dict(self.engine.rejected),
            },
            self.virtual_time,
        )
        yield PublishStatus("finished")
        return True

    def wait_for_agents(self) -> Flow:
        yield from self.ask_validation([])  # an outstanding validation is not held back
        needed = self.config.agents_needed
        clock: Clock = yield ReadClock()
        deadline = clock.monotonic + self.config.agent_wait_timeout
        online: list[str] = yield ReadOnline()
        while len(online) < needed and clock.monotonic < deadline:
            yield Drain(Until.AGENT_JOINED, min(deadline, clock.monotonic + 0.2))
            clock = yield ReadClock()
            online = yield ReadOnline()
        yield Emit(EventName.AGENTS_READY, self.completed_rounds, {"online": len(online)})
        return len(online) >= self.config.clients_required

    # -- a round ---------------------------------------------------------------------------
    def round(self, round_: int) -> Flow:
        c = self.config
        clock: Clock = yield ReadClock()
        started = clock.monotonic
        online: list[str] = yield ReadOnline()
        if len(self.plan.eligible(online, self.virtual_time)) < c.clients_required:
            if self.phase is not JobPhase.WAITING_FOR_AGENTS:  # the job's start waited already
                self.set_phase(JobPhase.WAITING_FOR_AGENTS)
            yield from self.wait_for_agents()
            online = yield ReadOnline()
            if self.virtual_time is not None:
                self.virtual_time = self.plan.skip_to_enough_active(online, self.virtual_time)
        self.set_phase(JobPhase.TRAINING)
        online = self.plan.eligible((yield ReadOnline()), self.virtual_time)
        if len(online) < c.clients_required:
            reason = f"only {len(online)} of {c.clients_required} agents online"
            yield from self.fail_early(round_, [], reason)
            return
        clock = yield ReadClock()
        t0, ingest = clock.perf, 0.0
        now = self.virtual_time if self.virtual_time is not None else clock.wall
        self.plan.register_new_agents(self.selector, online, now)
        selection = self.selector.select_participants(c.dispatch_count, now, online)
        selected = list(selection.clients)
        default = dict.fromkeys(selected, self.train_config())
        plan = self.plan.virtual_plan(round_, selected, default, self.virtual_time)
        dispatched = plan.dispatched if plan is not None else selected
        if not dispatched:
            yield from self.fail_early(
                round_, selected, "no candidate stays active through the round"
            )
            return
        # Per-client overrides (PyramidFL) plan the round of the agents that will train:
        # on the virtual clock the K kept of the over-committed sample, whose ranks and
        # idle time are relative to each other, not to clients that were never sent.
        overrides = self.selector.plan_overrides(dispatched, c.local_steps)
        configs = {
            a: self.train_config(
                overrides[a].local_steps if a in overrides else None,
                1.0 - overrides[a].dropout_frac if a in overrides else 1.0,
            )
            for a in dispatched
        }
        if overrides and plan is not None and self.virtual_time is not None:
            plan = self.plan.replan(round_, plan, configs, self.virtual_time)
        begin: dict[str, Any] = {
            "selected": selected,
            "dispatched": dispatched,
            "online": len(online),
            "selector": selection.info,
            "t_budget": self.selector.t_budget,
        }
        if overrides:
            begin["overrides"] = {
                a: {"dropout_frac": o.dropout_frac, "local_steps": o.local_steps}
                for a, o in overrides.items()
            }
        if plan is not None:
            begin["estimates"] = plan.durations
            begin["inactive"] = plan.inactive
        yield Emit(EventName.ROUND_BEGIN, round_, begin, self.virtual_time)
        yield PublishStatus()  # phase "training"
        t1 = (yield ReadClock()).perf
        # Virtual clock: everyone dispatched must answer (arrival order means nothing);
        # wall clock: the first K successful arrivals are the K fastest.
        target = len(dispatched) if self.virtual_time is not None else c.target_updates
        # Waiting for every update anyway, the validations may ride in them: two messages
        # fewer per agent. Keeping the K fastest, a straggler's would hold up the results.
        in_update = target >= len(dispatched)
        requests = yield from self.ask_validation(dispatched, in_update=in_update)
        assignments = yield SendTasks(
            round_, "train", dispatched, configs, c.round_timeout, validate_first=requests
        )
        t2 = (yield ReadClock()).perf
        yield CrashPoint("tasks_published", round_)
        yield PrepareRows(len(dispatched))
        self.engine.open_round(
            round_,
            assignments,
            target=target,
            required=c.clients_required,
            deadline=(yield ReadClock()).monotonic + c.round_timeout,
            folded={a: r.in_update for a, r in requests.items()},
        )
        ingest += yield Drain(Until.ROUND_CLOSED)
        closed = self.engine.close_round()
        clock = yield ReadClock()
        self.engine.end_round(clock.monotonic)
        replies = closed.replies
        kept, durations, virtual_duration = self.plan.choose_kept(
            closed, plan, started, self.virtual_time, self.selector.t_budget
        )
        ok = closed.phase is Phase.COMPLETE and len(kept) >= c.clients_required
        reason = (
            closed.reason
            if ok or closed.phase is Phase.FAILED
            else f"{len(kept)} of {c.clients_required} required updates were on time"
        )
        record: dict[str, Any] = {
            "round": round_,
            "ok": ok,
            "reason": reason,
            "selected": selected,
            "kept": kept if ok else [],
            "stragglers": [],
            "duration": 0.0,
            "virtual_duration": virtual_duration,
            "failed": sorted(closed.failures),
            "durations": {a: durations[a] for a in sorted(durations) if a in dispatched},
            "update_bytes": {a: r.nbytes for a, r in sorted(replies.items())},
            "keep_frac_all": {a: r.meta.keep_frac for a, r in sorted(replies.items())},
            "upload_bytes_all": sum(r.nbytes for r in replies.values()),
        }
        t3 = clock.perf
        if ok:
            yield from self.aggregate(round_, record, replies, durations)
        clock = yield ReadClock()
        t4 = clock.perf
        record["stragglers"] = [a for a in selected if a not in record["kept"]]
        if record["stragglers"]:
            self.selector.register_stragglers(
                record["stragglers"],
                {a: durations.get(a, c.round_timeout) for a in record["stragglers"]},
                round_,
            )
        record["duration"] = clock.monotonic - started
        if self.virtual_time is not None:
            self.virtual_time += virtual_duration or 0.0
        validate = record["ok"] and self.eval_due(round_)
        if validate and self.config.test_data:
            loss, accuracy, count = yield EvaluateOnServer()  # the new model, here
            record.update(accuracy=accuracy, loss=loss, eval_examples=count)
            self.last_accuracy, self.last_loss = accuracy, loss
            validate = False
        self.completed_rounds = round_
        # Where the coordinator's own time went (training and waiting excluded).
        record["timing"] = {
            "select_s": t1 - t0,
            "dispatch_s": t2 - t1,
            "ingest_s": ingest,
            "aggregate_s": t4 - t3,
        }
        entry = round_entry(RoundEnd(**record))
        timing = entry["timing"]
        self.history.append(entry)
        yield CrashPoint("aggregated", round_)
        # Write-ahead: the state that produced the new model is durable before any agent
        # can see the model (or a task for it). A crash after this line resumes at this
        # round's end; before it, the round runs again from the previous checkpoint.
        t5 = (yield ReadClock()).perf
        yield SaveCheckpoint()
        timing["checkpoint_s"] = (yield ReadClock()).perf - t5
        timing["overhead_s"] = sum(timing.values())
        yield CrashPoint("checkpointed", round_)
        if entry["ok"]:
            yield PublishModel()
            yield CrashPoint("model_published", round_)
        # The last round's validation ran alongside this round's training: it ends first,
        # so ROUND_END events stay in round order.
        yield from self.finish_validation()
        deferred = False
        if validate:
            deferred = c.eval_overlap and round_ < c.rounds
            yield from self.start_validation(round_, entry, overlap=deferred)
            yield CrashPoint("validating", round_)
            if not deferred:
                yield from self.finish_validation(emit=False)
                yield SaveCheckpoint()  # its accuracy, before ROUND_END reports it
        if not deferred:  # else the validation's end emits it, next round
            yield from self.emit_round_end(entry, self.virtual_time)
        yield PublishStatus()

    def aggregate(
        self,
        round_: int,
        record: dict[str, Any],
        replies: dict[str, Reply],
        durations: dict[str, float],
    ) -> Flow:
        kept: list[str] = record["kept"]
        record["upload_bytes"] = sum(replies[a].nbytes for a in kept)
        weights = [float(max(replies[a].meta.num_examples, 1)) for a in kept]
        taken = yield Aggregate([replies[a].row for a in kept], weights)
        if not taken:
            record.update(ok=False, reason="the aggregated model is not finite (overflow)", kept=[])
            return
        self.model_version += 1
        losses = [replies[a].meta.loss for a in kept]
        record["train_loss"] = float(np.average(losses, weights=weights))
        record["keep_frac"] = {a: replies[a].meta.keep_frac for a in kept}
        record["steps"] = {a: replies[a].meta.steps for a in kept}
        for agent in kept:
            meta = replies[agent].meta
            self.selector.register_feedback(
                agent,
                meta.utility,
                round_,
                durations[agent],
                True,
                gradient_utility=meta.grad_norm
                * min(meta.num_examples, max(meta.steps, 1) * self.config.batch_size)
                / 100.0,
                num_samples=float(meta.num_examples),
            )

    def fail_early(self, round_: int, selected: list[str], reason: str) -> Flow:
        """A round that could not dispatch anyone: it fails without waiting for anything.

        On the virtual clock the round still costs its budget, so the next one sees a
        different fleet instead of the same empty one again.
        """
        yield from self.finish_validation()
        if self.virtual_time is not None:
            self.virtual_time += self.selector.t_budget or self.config.t_budget
        record = RoundEnd(
            round=round_,
            ok=False,
            reason=reason,
            selected=selected,
            kept=[],
            stragglers=list(selected),
            duration=0.0,
        )
        self.completed_rounds = round_
        entry = round_entry(record)
        self.history.append(entry)
        yield SaveCheckpoint()
        yield from self.emit_round_end(entry, self.virtual_time)
        yield PublishStatus()

    def emit_round_end(self, entry: dict[str, Any], virtual_time: float | None) -> Flow:
        round_ = entry["round"]
        if entry.get("accuracy") is not None:
            data = {"accuracy": entry["accuracy"], "loss": entry["loss"]}
            yield Emit(EventName.TEST_RESULT, round_, data, virtual_time)
        name = EventName.ROUND_END if entry["ok"] else EventName.ROUND_FAILED
        yield Emit(name, round_, checked_entry(entry), virtual_time)

    def eval_due(self, round_: int) -> bool:
        interval = self.config.eval_interval
        return interval > 0 and (round_ % interval == 0 or round_ == self.config.rounds)

    def train_config(self, local_steps: int | None = None, keep_frac: float = 1.0) -> TrainConfig:
        return self.plan.train_config(self.selector.t_budget, local_steps, keep_frac)

    # -- the validation --------------------------------------------------------------------
    def start_validation(self, round_: int, entry: dict[str, Any], *, overlap: bool) -> Flow:
        """Validate the model just published; results are taken as they come.

        ``overlap``: the next round follows at once, and its train tasks carry the requests
        of the agents it trains (:meth:`ask_validation`); otherwise everyone is asked now.
        """
        self.set_phase(JobPhase.VALIDATING)
        online: list[str] = yield ReadOnline()
        most = self.config.eval_max_clients
        agents = online if len(online) <= most else sorted(self.rng.sample(online, most))
        self.engine.open_validation(round_, agents, self.config.eval_timeout)
        self._pending = _PendingEntry(entry, self.virtual_time)
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
        assert pending is not None
        answered = [r for r in closed.results.values() if r.num_examples > 0]
        entry = pending.entry
        if answered:
            weights = [r.num_examples for r in answered]
            entry["accuracy"] = float(np.average([r.accuracy for r in answered], weights=weights))
            entry["loss"] = float(np.average([r.loss for r in answered], weights=weights))
            entry["eval_agents"] = len(answered)
            self.last_accuracy, self.last_loss = entry["accuracy"], entry["loss"]
        if emit:
            yield from self.emit_round_end(entry, pending.virtual_time)


def _list_state(state: Any) -> Any:
    return [_list_state(s) for s in state] if isinstance(state, tuple) else state


def _tuple_state(state: Any) -> Any:
    return tuple(_tuple_state(s) for s in state) if isinstance(state, list) else state
