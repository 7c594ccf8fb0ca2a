"""One job's asyncio adapter: it carries out what the job's flow asks, and feeds it replies.

The round is :mod:`coordinator.round_flow` (the sequence), :mod:`coordinator.round_engine`
(the replies) and :mod:`coordinator.round_plan` (the decisions): none awaits, reads the
clock or touches MQTT. This module does: it publishes through the service (one connection
for all jobs), drains its :mod:`~coordinator.reply_inbox`, holds the model and its
buffers, writes the checkpoint, and runs heavy numpy work in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from client_selectors import ClientSelector, make_selector
from coordinator import checkpoint, model_step, packages
from coordinator.aggregation import UpdateStack
from coordinator.config import JobConfig
from coordinator.events import EventLog, EventName, read_events
from coordinator.job_leases import JobLease
from coordinator.publish import Publish
from coordinator.registry import AgentRegistry
from coordinator.reply_inbox import INLINE_DECODE_BYTES, Inbound, ReplyInbox
from coordinator.round_commands import (
    Aggregate,
    Aggregated,
    Clock,
    Command,
    CrashPoint,
    Drain,
    Emit,
    EvaluateOnServer,
    GrantAgents,
    HoldAgents,
    PrepareRows,
    PublishModel,
    PublishStatus,
    ReadClock,
    ReadOnline,
    SaveCheckpoint,
    SendTasks,
)
from coordinator.round_flow import CRASH_POINTS, JobFlow
from coordinator.round_plan import RoundPlanner
from coordinator.round_record import CheckpointState
from coordinator.round_state import JobPhase
from coordinator.round_validation import Flow
from coordinator.server_eval import ServerEvaluator
from coordinator.update_check import Assignment
from fedbus.fleet import load_fleet
from fedbus.fleet.trace import dynamic_windows
from fedbus.protocol.messages import JobStatus, ModelMeta, Task, encode_envelope, encode_json
from fedbus.protocol.params import ParamLayout
from fedbus.protocol.topics import Topics

__all__ = ["CRASH_POINTS", "Inbound", "JobRunner", "Publish", "crash_hook"]


crash_hook: Callable[[str, int], None] | None = None
"""Test seam: called as ``crash_hook(point, round)`` at each of :data:`CRASH_POINTS`; a
crash test sets it (in a forked coordinator) to ``os._exit`` at one of them."""


class JobRunner:
    def __init__(
        self,
        config: JobConfig,
        *,
        topics: Topics,
        publish: Publish,
        registry: AgentRegistry,
        run_dir: Path,
    ) -> None:
        self.config = config
        self.job = config.name
        self.topics = topics
        self._publish = publish
        self.registry = registry
        self.run_dir = run_dir
        self.events = EventLog(run_dir / "events.jsonl", self.job, self._publish_event)
        seed = config.selector.seed if config.selector.seed is not None else config.seed
        selector = make_selector(config.selector.name, config.selector_knobs, seed)
        fleet = load_fleet(config.fleet) if config.fleet else None
        if fleet is not None and hasattr(selector, "set_dynamic_source"):
            selector.set_dynamic_source(lambda cid, t: dynamic_windows(fleet.by_id(cid), t))
        self.flow = JobFlow(config, selector, RoundPlanner(config, fleet, 0, registry.profile))
        self.engine = self.flow.engine
        self.server_eval = (
            ServerEvaluator(config.model, config.test_data, config.test_data_args)
            if config.test_data
            else None
        )
        self._stack: UpdateStack | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._model_sending: asyncio.Task[None] | None = None
        self._model_buffer = bytearray()
        self._delta_buffer: np.ndarray | None = None
        self.replies = ReplyInbox(
            self.job,
            self.engine,
            max_update_bytes=config.max_update_bytes,
            max_pending_bytes=2 * config.dispatch_count * config.max_update_bytes,
            chunk_timeout=config.round_timeout,
            agent_lost=self._emit_agent_lost,
            straggler_answered=self._straggler_answered,
        )
        # This run's identity, new at every start (a resume too): an agent holding an older
        # run's retained model of the same or a newer version waits for this run's.
        self.run_epoch = uuid.uuid4().hex[:16]
        self.lease: JobLease | None = None  # the multi-job scheduler's seam (the service's)
        self.layout: ParamLayout
        self.global_flat: np.ndarray

    @property
    def selector(self) -> ClientSelector[Any]:
        return self.flow.selector

    @property
    def inbox(self) -> asyncio.Queue[Inbound]:
        """Where the service puts this job's replies (a bench may swap in its own queue)."""
        return self.replies.queue

    @inbox.setter
    def inbox(self, queue: asyncio.Queue[Inbound]) -> None:
        self.replies.queue = queue

    @property
    def straggling(self) -> dict[str, float]:
        """Agents still busy with this job's tasks, until when (monotonic): the service's."""
        return self.flow.busy(time.monotonic())

    def _straggler_answered(self, agent: str) -> None:
        if self.flow.holds.answered(agent) and self.lease is not None:
            self.lease.hold(self.flow.held(time.monotonic()))  # back to the pool

    async def _emit_agent_lost(self, agent: str) -> None:
        round_ = self.flow.completed_rounds + 1
        await self.events.emit(EventName.AGENT_LOST, round_, {"agent": agent})

    # -- the job ---------------------------------------------------------------------------
    async def run(self) -> bool:
        """Run the job to its end; True when every round ran (failed rounds included)."""
        flow = self.flow
        try:
            resumed = await asyncio.to_thread(self._load_or_init)
            flow.set_phase(JobPhase.WAITING_FOR_AGENTS)
            if resumed:
                await self._reemit_missing_round_ends()
                data: dict[str, Any] = {"model_version": flow.model_version}
                await self.events.emit(EventName.JOB_RESUMED, flow.completed_rounds, data)
            else:
                data = {
                    "config": self.config.model_dump(mode="json"),
                    "num_params": self.layout.num_params,
                }
                await self.events.emit(EventName.JOB_BEGIN, 0, data)
                await self._save_checkpoint()  # write-ahead: the model is durable before it is out
            await packages.publish_job_package(self.config, self.topics, self._publish)
            await self.publish_model()
            await self.publish_status()
            done: bool = await self._drive(flow.run())
            await self._flush_publishes()
            return done
        finally:
            self.events.close()

    async def _drive(self, flow: Flow) -> Any:
        """Carry out the flow's commands, one at a time, until it returns."""
        result: Any = None
        while True:
            try:
                command = flow.send(result)
            except StopIteration as stop:
                return stop.value
            result = await self._execute(command)

    async def _execute(self, command: Command) -> Any:
        match command:
            case ReadClock():
                return Clock(time.monotonic(), time.perf_counter(), time.time())
            case ReadOnline():
                return self.registry.online()
            case GrantAgents(candidates):
                return self.lease.grant(candidates) if self.lease is not None else candidates
            case HoldAgents(agents):
                if self.lease is not None:
                    self.lease.hold(agents)
            case Emit(name, round_, data, virtual_time):
                await self.events.emit(name, round_, dict(data), virtual_time=virtual_time)
            case PublishStatus(state):
                await self.publish_status(state)
            case PublishModel():
                await self.publish_model()
            case SaveCheckpoint():
                await self._save_checkpoint()
            case CrashPoint(point, round_):
                if crash_hook is not None:
                    await self._flush_publishes()  # "after X" means X is out
                    crash_hook(point, round_)
            case SendTasks():
                return await self._send_tasks(command)
            case Drain(until, deadline):
                return await self.replies.drain(until, deadline, self._stack, self.layout)
            case PrepareRows(rows):
                if self._stack is None:
                    self._stack = UpdateStack(self.layout.num_params, max(rows, 1))
                elif self._stack.capacity < rows:
                    self._stack.grow(rows)
                self._stack.reset()  # rows of earlier rounds may not be aggregated by mistake
            case Aggregate(rows, weights, norm_clip):
                return await self._aggregate(rows, weights, norm_clip)
            case EvaluateOnServer():
                assert self.server_eval is not None
                tensors = self.layout.unflatten(self.global_flat)
                return await asyncio.to_thread(self.server_eval.evaluate, tensors)
        return None

    # -- publishing ------------------------------------------------------------------------
    def _publish_soon(
        self,
        topic: str,
        payload: bytes | bytearray,
        retain: bool,
        chunk_topic: Callable[[int], str] | None = None,
    ) -> asyncio.Task[None]:
        """Publish (QoS 1) without waiting for the PUBACK: events, status and the model are
        not the round's next step (waiting put several broker round trips between rounds).
        They leave in order (one connection); the job waits for all of them at its end."""
        task = asyncio.ensure_future(self._publish(topic, payload, 1, retain, chunk_topic))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    async def _flush_publishes(self) -> None:
        while self._in_flight:
            await asyncio.gather(*self._in_flight)

    async def _publish_event(self, payload: bytes) -> None:
        self._publish_soon(self.topics.job_events(self.job), payload, False)

    async def publish_status(self, state: str = "running") -> None:
        flow = self.flow
        status = JobStatus(
            job=self.job,
            state=state,  # type: ignore[arg-type]
            round=flow.completed_rounds,
            rounds=self.config.rounds,
            phase=flow.phase.value,
            model_version=flow.model_version,
            last_accuracy=flow.last_accuracy,
            last_loss=flow.last_loss,
            virtual_time=flow.virtual_time,
            rejected=dict(self.engine.rejected),
            late=self.engine.late,
            ts=time.time(),
        )
        self._publish_soon(self.topics.job_status(self.job), encode_json(status), True)

    async def publish_model(self) -> None:
        meta = ModelMeta(
            job=self.job,
            version=self.flow.model_version,
            round=self.flow.completed_rounds,
            names=self.layout.names,
            run_epoch=self.run_epoch,
        )
        # Reuse last round's buffer once its publish is acknowledged (paho let go of it):
        # the same-sized model is written into already-mapped memory every round.
        if self._model_sending is not None:
            with contextlib.suppress(Exception):  # a failed publish left no buffer to reuse
                await self._model_sending
        tensors = self.layout.unflatten(self.global_flat)
        if self.layout.num_params * 4 > INLINE_DECODE_BYTES:  # 44 MB: ~65 ms of copying
            payload = await asyncio.to_thread(
                encode_envelope, meta, tensors, into=self._model_buffer
            )
        else:
            payload = encode_envelope(meta, tensors, into=self._model_buffer)
        self._model_buffer = bytearray()
        chunk_topic = lambda index: self.topics.job_model_chunk(self.job, index)  # noqa: E731
        self._model_sending = self._publish_soon(
            self.topics.job_model(self.job), payload, True, chunk_topic
        )

        def reuse(sent: asyncio.Task[None]) -> None:
            if not sent.cancelled() and sent.exception() is None:
                self._model_buffer = payload

        self._model_sending.add_done_callback(reuse)

    async def republish(self) -> None:
        """After a reconnect: the broker may have lost retained messages in a crash."""
        if hasattr(self, "global_flat"):
            await packages.publish_job_package(self.config, self.topics, self._publish)
            await self.publish_model()
            await self.publish_status()

    async def _send_tasks(self, command: SendTasks) -> dict[str, Assignment]:
        """Publish one task per agent; ``wait``: until the broker acknowledged them all."""
        assignments: dict[str, Assignment] = {}
        payloads: list[tuple[str, bytearray]] = []
        version, round_ = self.flow.model_version, command.round
        deadline = time.time() + command.timeout
        for agent in command.agents:
            task = Task(
                job=self.job,
                round=round_,
                task_id=uuid.uuid4().hex[:16],
                kind=command.kind,  # type: ignore[arg-type]
                model_version=version,
                config=command.configs[agent],
                deadline=deadline,
                timeout=command.timeout,
                virtual_start=self.flow.virtual_time,
                issued_at=time.time(),
                validate_first=command.validate_first.get(agent),
                run_epoch=self.run_epoch,
            )
            assignments[agent] = Assignment(agent, task.task_id, round_, version)
            payloads.append((self.topics.agent_tasks(agent), encode_envelope(task)))
        if not command.wait:
            for topic, payload in payloads:
                self._publish_soon(topic, payload, False)
            return assignments
        # All in flight at once: one PUBACK round trip for the batch, not one per agent.
        await asyncio.gather(*(self._publish(topic, p, 1, False) for topic, p in payloads))
        return assignments

    # -- the model and the checkpoint ------------------------------------------------------
    def _load_or_init(self) -> bool:
        """The checkpoint's model and state (True), or the job's initial model (False)."""
        restored = checkpoint.load(self.run_dir / "checkpoint")
        if restored is None:
            self._take_model(packages.initial_model_of(self.config, self.run_dir))
            return False
        raw, tensors = restored
        try:
            state = CheckpointState.model_validate(raw)
        except ValidationError as exc:
            raise RuntimeError(f"{self.run_dir}/checkpoint/state.json: {exc}") from exc
        if state.job != self.job:
            raise RuntimeError(
                f"{self.run_dir}: checkpoint belongs to job {state.job!r}, not {self.job!r}"
            )
        self._take_model(tensors)
        self.flow.restore(state)
        return True

    def _take_model(self, tensors: dict[str, np.ndarray]) -> None:
        self.layout = ParamLayout.from_tensors(tensors)
        self.global_flat = self.layout.flatten(tensors)
        self.flow.plan.num_params = self.layout.num_params

    async def _save_checkpoint(self) -> None:
        """A large model's file in a worker thread (tens of ms for 44 MB); a small one inline.

        A worker thread has to win the GIL from a loop busy with the next round's traffic:
        measured at N=10 (38 KB model) that stretched a 2-3 ms write to 10-25 ms, on the
        path from one round to the next.
        """
        if self.layout.num_params * 4 > INLINE_DECODE_BYTES:
            await asyncio.to_thread(self._checkpoint)
        else:
            self._checkpoint()

    def _checkpoint(self) -> None:
        state = self.flow.snapshot().model_dump(exclude={"model_file"})
        tensors = self.layout.unflatten(self.global_flat)
        checkpoint.save(self.run_dir / "checkpoint", self.flow.model_version, tensors, state)

    async def _reemit_missing_round_ends(self) -> None:
        """A crash between checkpoint and ROUND_END leaves the event unwritten: write it now."""
        ends = ("ROUND_END", "ROUND_FAILED")
        logged = {e["round"] for e in read_events(self.events.path) if e["event"] in ends}
        await self._drive(self.flow.missing_round_ends(logged))

    async def _aggregate(
        self, rows: list[int], weights: list[float], norm_clip: float | None
    ) -> Aggregated:
        """Aggregate the kept rows into a new model; not ok (model kept) if it overflows."""
        assert self._stack is not None
        step = functools.partial(model_step.step, self.global_flat, self._delta_buffer)
        stepped = await asyncio.to_thread(
            step, self._stack, rows, weights, self.config.aggregator, norm_clip
        )
        if stepped is None:
            return Aggregated(ok=False)
        self.global_flat, self._delta_buffer, clipped = stepped
        return Aggregated(ok=True, clipped=clipped)
