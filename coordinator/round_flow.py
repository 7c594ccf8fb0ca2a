"""The job's rounds, in order, as a sans-I/O flow: commands out, results in.

A reader looking for "what happens in a round" reads :meth:`JobFlow.round`. It never
awaits, reads no clock and touches no socket: each step that needs the outside world is a
command (:mod:`coordinator.round_commands`) that the flow yields and the adapter
(:class:`coordinator.job_runner.JobRunner`) carries out, sending back the result. The
replies within a round are the round engine's (:mod:`coordinator.round_engine`); the
decisions (who trains, on what, who is kept) the planner's (:mod:`coordinator.round_plan`);
the validation and the scheduler's seam are its base's (:mod:`coordinator.round_validation`).

A round: wait for enough agents if need be; select; plan; ROUND_BEGIN; ask the
outstanding validation's agents (folded into train tasks where they train); send train
tasks; collect until the engine closes the round; keep, aggregate, feed the selector;
checkpoint (write-ahead), then publish the model; finish the previous validation; start
this round's (server-side, overlapped, or waited for); ROUND_END; status.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np

from client_selectors import ClientSelector
from coordinator import metrics
from coordinator.agent_holds import AgentHolds
from coordinator.budget import make_budget_pacer, pace_round, round_budget
from coordinator.config import JobConfig
from coordinator.events import EventName
from coordinator.round_commands import (
    Aggregate,
    Aggregated,
    Clock,
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
from coordinator.round_record import CheckpointState, RoundEnd, round_entry
from coordinator.round_state import JobPhase, Phase, advance
from coordinator.round_validation import Flow, ValidationFlow
from coordinator.round_verdicts import Reply
from coordinator.unable_agents import unable_to_run
from fedbus.protocol.messages import TrainConfig

CRASH_POINTS = ("tasks_published", "aggregated", "checkpointed", "model_published", "validating")
"""The round's command boundaries, in order, at which a :class:`CrashPoint` is yielded."""


class JobFlow(ValidationFlow):
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
        self.rng = random.Random(config.seed)
        self._pending = None
        self.budget = make_budget_pacer(config, selector)  # None: the budget is fixed
        self.holds = AgentHolds()

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
            budget=self.budget.to_state() if self.budget is not None else None,
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
        if self.budget is not None and state.budget:
            self.budget.load_state(state.budget)
        # Agents found unable to run the job's code stay excluded across a restart.
        for entry in self.history:
            self.plan.unable.update(entry.get("excluded") or {})

    def t_budget(self) -> float:
        """This round's budget: the selector's own, else the job pacer's, else the job's."""
        return round_budget(self.config, self.selector, self.budget)

    def eligible(self) -> Flow:
        """Online agents that may train now (:meth:`RoundPlanner.eligible`), as granted."""
        online: list[str] = yield ReadOnline()
        able = self.plan.eligible(online, self.virtual_time)
        granted: list[str] = yield from self.granted(able)
        return granted

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
        granted: list[str] = yield from self.granted(online)
        # Waiting for other jobs to free agents, or for an agent that meets the job's
        # requirements, does not time out; too few agents online at all still does.
        while len(granted) < needed and (clock.monotonic < deadline or len(online) >= needed):
            yield Drain(Until.AGENT_JOINED, clock.monotonic + 0.2)
            clock = yield ReadClock()
            online = yield ReadOnline()
            granted = yield from self.granted(online)
        yield Emit(EventName.AGENTS_READY, self.completed_rounds, {"online": len(granted)})
        return len(granted) >= self.config.clients_required

    # -- a round ---------------------------------------------------------------------------
    def round(self, round_: int) -> Flow:
        c = self.config
        clock: Clock = yield ReadClock()
        started = clock.monotonic
        if len((yield from self.eligible())) < c.clients_required:
            if self.phase is not JobPhase.WAITING_FOR_AGENTS:  # the job's start waited already
                self.set_phase(JobPhase.WAITING_FOR_AGENTS)
            yield from self.wait_for_agents()
            online: list[str] = yield from self.granted((yield ReadOnline()))
            if self.virtual_time is not None:
                self.virtual_time = self.plan.skip_to_enough_active(online, self.virtual_time)
        self.set_phase(JobPhase.TRAINING)
        online = yield from self.eligible()
        if len(online) < c.clients_required:
            unable = self.plan.unable
            cannot = f" ({len(unable)} cannot run this job)" if unable else ""
            reason = f"only {len(online)} of {c.clients_required} agents online{cannot}"
            yield from self.fail_early(round_, [], reason)
            return
        clock = yield ReadClock()
        t0, ingest = clock.perf, 0.0
        now = self.virtual_time if self.virtual_time is not None else clock.wall
        self.plan.register_new_agents(self.selector, online, now)
        if self.virtual_time is not None:
            self.plan.current_selector_times(self.selector, online, self.train_config(), now)
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
        self.holds.dispatched(dispatched)
        yield from self.hold()
        if plan is not None and self.virtual_time is not None:
            # The selector plans its overrides from this round's estimates (PyramidFL).
            self.plan.refresh_selector_times(
                self.selector, round_, dispatched, self.train_config(), self.virtual_time
            )
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
            "t_budget": self.t_budget(),
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
        # Over-committed agents still training stay this job's until their deadline.
        self.holds.round_closed(closed.pending, closed.deadline)
        yield from self.hold()
        replies = closed.replies
        kept, durations, virtual_duration = self.plan.choose_kept(
            closed, plan, started, self.virtual_time, self.t_budget()
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
            "failure_reasons": {a: closed.failures[a].reason for a in sorted(closed.failures)},
            "resources": {a: dict(r.meta.resources) for a, r in sorted(replies.items())},
            "durations": {a: durations[a] for a in sorted(durations) if a in dispatched},
            "update_bytes": {a: r.nbytes for a, r in sorted(replies.items())},
            "keep_frac_all": {a: r.meta.keep_frac for a, r in sorted(replies.items())},
            "upload_bytes_all": sum(r.nbytes for r in replies.values()),
        }
        if excluded := unable_to_run(record["failure_reasons"]):
            self.plan.unable.update(excluded)  # never picked again for this job
            record["excluded"] = excluded
        record["budget"] = pace_round(
            self.budget,
            c,
            self.selector,
            dispatched=len(dispatched),
            succeeded=len(replies),
            counted=len(kept) if ok else 0,
            full_steps=sum(replies[a].meta.steps >= c.local_steps for a in kept) if ok else 0,
        )
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
        trust = self.config.trust
        # Example counts as weights, capped by what each agent registered and the job's
        # caps (#16: one agent claiming 10^9 examples must not take the round).
        weights = self.plan.trusted_weights(
            kept, [replies[a].meta.num_examples for a in kept], trust.median_weight_cap
        )
        taken: Aggregated = yield Aggregate(
            [replies[a].row for a in kept], weights, trust.norm_clip
        )
        if trust.norm_clip is not None:
            record["clipped"] = taken.clipped
        if not taken.ok:
            record.update(ok=False, reason="the aggregated model is not finite (overflow)", kept=[])
            return
        self.model_version += 1
        losses = [replies[a].meta.loss for a in kept]
        record["train_loss"] = float(np.average(losses, weights=weights))
        record["keep_frac"] = {a: replies[a].meta.keep_frac for a in kept}
        record["steps"] = {a: replies[a].meta.steps for a in kept}
        record.update(
            metrics.round_entry(
                {a: replies[a].meta.metrics for a in kept},
                {a: replies[a].meta.num_examples for a in kept},
                key="train_metrics",
            )
        )
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
            self.virtual_time += self.t_budget()
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

    def missing_round_ends(self, logged: set[int]) -> Flow:
        """After a crash between checkpoint and ROUND_END: the events not written yet."""
        for entry in self.history:
            if entry["round"] not in logged:
                name = EventName.ROUND_END if entry["ok"] else EventName.ROUND_FAILED
                yield Emit(name, entry["round"], entry, self.virtual_time)

    def eval_due(self, round_: int) -> bool:
        interval = self.config.eval_interval
        return interval > 0 and (round_ % interval == 0 or round_ == self.config.rounds)

    def train_config(self, local_steps: int | None = None, keep_frac: float = 1.0) -> TrainConfig:
        return self.plan.train_config(self.t_budget(), local_steps, keep_frac)


def _list_state(state: Any) -> Any:
    return [_list_state(s) for s in state] if isinstance(state, tuple) else state


def _tuple_state(state: Any) -> Any:
    return tuple(_tuple_state(s) for s in state) if isinstance(state, list) else state
