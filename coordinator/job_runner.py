"""One job's asyncio adapter: it carries out what the job's flow asks, and feeds it replies.

The round itself is :mod:`coordinator.round_flow` (the sequence, as commands),
:mod:`coordinator.round_engine` (the replies) and :mod:`coordinator.round_plan` (the
decisions); none of them awaits, reads the clock or touches MQTT. This module does: it
publishes through the service (which owns the one connection), reads agent replies from
its inbox (fed by the service's receive loop), holds the model and its buffers, writes
the checkpoint, and runs heavy numpy work (large updates, aggregation) in a worker thread
so keep-alives keep flowing. The runner owns everything per job, so the service can hold
several.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import ValidationError

from client_selectors import ClientSelector, make_selector
from coordinator import checkpoint, seed_model
from coordinator.aggregation import UpdateStack, aggregate
from coordinator.config import JobConfig
from coordinator.events import EventLog, EventName, read_events
from coordinator.registry import AgentRegistry
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
from coordinator.round_flow import CRASH_POINTS, Flow, JobFlow
from coordinator.round_plan import RoundPlanner
from coordinator.round_record import CheckpointState
from coordinator.round_state import JobPhase
from coordinator.round_table import RoundPhase, ValidationPhase
from coordinator.round_verdicts import AgentLost, Late, Refused, TimerFired, WriteRow
from coordinator.server_eval import ServerEvaluator
from coordinator.update_check import (
    Assignment,
    Rejected,
    decode_result,
    decode_update,
    write_update,
)
from fedbus.fleet import load_fleet
from fedbus.fleet.trace import dynamic_windows
from fedbus.protocol import chunking
from fedbus.protocol.errors import InvalidMessage
from fedbus.protocol.messages import JobStatus, ModelMeta, Task, encode_envelope, encode_json
from fedbus.protocol.params import ParamLayout
from fedbus.protocol.topics import Topics

__all__ = ["CRASH_POINTS", "Inbound", "JobRunner", "Publish", "crash_hook"]

log = logging.getLogger(__name__)

# Updates larger than this are decoded in a worker thread, smaller ones inline.
INLINE_DECODE_BYTES = 1 << 20

crash_hook: Callable[[str, int], None] | None = None
"""Test seam: called as ``crash_hook(point, round)`` at each of :data:`CRASH_POINTS`; a
crash test sets it (in a forked coordinator) to ``os._exit`` at one of them."""


@dataclass(frozen=True)
class Inbound:
    """A reply routed to this job by the service, or word that an agent went offline."""

    kind: str  # "update" | "result" | "lost" | "joined"
    agent: str
    payload: bytes | bytearray | memoryview = b""
    received: float = 0.0


class Publish(Protocol):
    """The service's publish: chunks payloads above its chunk size (to ``chunk_topic``)."""

    def __call__(
        self,
        topic: str,
        payload: bytes | bytearray,
        qos: int,
        retain: bool,
        chunk_topic: Callable[[int], str] | None = None,
    ) -> Awaitable[None]: ...


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
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        self.events = EventLog(run_dir / "events.jsonl", self.job, self._publish_event)
        seed = config.selector.seed if config.selector.seed is not None else config.seed
        selector = make_selector(config.selector.name, config.selector_knobs, seed)
        fleet = load_fleet(config.fleet) if config.fleet else None
        if fleet is not None and hasattr(selector, "set_dynamic_source"):
            selector.set_dynamic_source(lambda cid, t: dynamic_windows(fleet.by_id(cid), t))
        # P is known once the model is loaded (_load_or_init sets it).
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
        # Chunked updates: at most two in-flight rounds' worth of unfinished transfers.
        self._chunks = chunking.Reassembler(
            max_bytes=config.max_update_bytes,
            max_pending_bytes=2 * config.dispatch_count * config.max_update_bytes,
            timeout=config.round_timeout,
        )
        # This run's identity, new at every start (a resume too): an agent holding an older
        # run's retained model of the same or a newer version waits for this run's.
        self.run_epoch = uuid.uuid4().hex[:16]
        self.layout: ParamLayout
        self.global_flat: np.ndarray

    @property
    def selector(self) -> ClientSelector:
        return self.flow.selector

    # -- the job ---------------------------------------------------------------------------
    async def run(self) -> bool:
        """Run the job to its end; True when every round ran (failed rounds included)."""
        flow = self.flow
        try:
            resumed = await asyncio.to_thread(self._load_or_init)
            flow.set_phase(JobPhase.WAITING_FOR_AGENTS)
            if resumed:
                await self._reemit_missing_round_ends()
                data = {"model_version": flow.model_version}
                await self.events.emit(EventName.JOB_RESUMED, flow.completed_rounds, data)
            else:
                data = {
                    "config": self.config.model_dump(mode="json"),
                    "num_params": self.layout.num_params,
                }
                await self.events.emit(EventName.JOB_BEGIN, 0, data)
                await self._save_checkpoint()  # write-ahead: the model is durable before it is out
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
                return await self._drain(until, deadline)
            case PrepareRows(rows):
                if self._stack is None:
                    self._stack = UpdateStack(self.layout.num_params, max(rows, 1))
                elif self._stack.capacity < rows:
                    self._stack.grow(rows)
                self._stack.reset()  # rows of earlier rounds may not be aggregated by mistake
            case Aggregate(rows, weights):
                return await self._aggregate(rows, weights)
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
        """Publish (QoS 1) without waiting here for the broker's acknowledgement.

        Events, status and the new model are for watchers and agents, not for the round's
        next step: waiting out each PUBACK put four or five broker round trips between one
        round's last update and the next round's tasks. Publishes still leave in the order
        they are made (one connection, tasks run first in, first out); the job waits for
        all of them before it ends.
        """
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
            if self.config.initial_model is not None:
                tensors = seed_model.load(self.config.initial_model)
            else:
                tensors = seed_model.build(self.config.model, self.config.seed)
            self._take_model(tensors)
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
        flow = self.flow
        flow.completed_rounds, flow.model_version = state.completed_rounds, state.model_version
        flow.history = list(state.history)
        self.engine.rejected = Counter(state.rejected)
        flow.virtual_time = state.virtual_time
        flow.last_accuracy, flow.last_loss = state.last_accuracy, state.last_loss
        flow.plan.registered = set(state.registered)
        flow.selector = type(flow.selector).from_state(state.selector)
        flow.rng.setstate(_tuple_state(state.rng))
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
        flow = self.flow
        state = CheckpointState(
            job=self.job,
            completed_rounds=flow.completed_rounds,
            model_version=flow.model_version,
            history=flow.history,
            rejected=dict(self.engine.rejected),
            virtual_time=flow.virtual_time,
            last_accuracy=flow.last_accuracy,
            last_loss=flow.last_loss,
            registered=sorted(flow.plan.registered),
            selector=flow.selector.state(),
            rng=_list_state(flow.rng.getstate()),
        ).model_dump(exclude={"model_file"})
        checkpoint.save(
            self.run_dir / "checkpoint",
            flow.model_version,
            self.layout.unflatten(self.global_flat),
            state,
        )

    async def _reemit_missing_round_ends(self) -> None:
        """A crash between checkpoint and ROUND_END leaves the event unwritten: write it now."""
        ends = ("ROUND_END", "ROUND_FAILED")
        logged = {e["round"] for e in read_events(self.events.path) if e["event"] in ends}
        for entry in self.flow.history:
            if entry["round"] not in logged:
                name = EventName.ROUND_END if entry["ok"] else EventName.ROUND_FAILED
                await self.events.emit(
                    name, entry["round"], entry, virtual_time=self.flow.virtual_time
                )

    async def _aggregate(self, rows: list[int], weights: list[float]) -> bool:
        """Aggregate the kept rows into a new model; False (model kept) if it overflows."""
        if self._delta_buffer is None or self._delta_buffer.shape != self.global_flat.shape:
            self._delta_buffer = np.empty_like(self.global_flat)
        # Into a reused buffer: a fresh 47 MB result costs as much as the FedAvg itself.
        assert self._stack is not None
        aggregator = self.config.aggregator
        delta = await asyncio.to_thread(
            aggregate,
            aggregator.name,
            self._stack,
            rows,
            weights,
            out=self._delta_buffer,
            **aggregator.knobs,
        )
        if aggregator.server_lr != 1.0:
            delta *= np.float32(aggregator.server_lr)
        # Every update was checked finite, but the new model can still overflow: build it
        # in the delta buffer and take it only if finite (one more pass over P); the old
        # model's buffer becomes the next round's delta buffer.
        candidate = await asyncio.to_thread(_add_if_finite, self.global_flat, delta)
        if candidate is None:
            return False
        self.global_flat, self._delta_buffer = candidate, self.global_flat
        return True

    # -- the inbox -------------------------------------------------------------------------
    async def _drain(self, until: Until, deadline: float | None = None) -> float:
        """Feed inbox items to the engine until ``until``; the seconds spent handling them.

        Deadlines are the engine's: when one passes, it gets a TimerFired input. Waiting
        for agents (AGENT_JOINED), an agent that joined or ``deadline`` ends the wait.
        """
        spent = 0.0
        while True:
            now = time.monotonic()
            due = self.engine.next_deadline()
            if due is not None and now >= due:
                self.engine.timer_fired(TimerFired(now))
                continue
            if until is Until.ROUND_CLOSED and self.engine.round_phase is not RoundPhase.COLLECTING:
                return spent
            if (
                until is Until.VALIDATION_CLOSED
                and self.engine.validation_phase is not ValidationPhase.OPEN
            ):
                return spent
            if until is Until.AGENT_JOINED and (deadline is None or now >= deadline):
                return spent
            limit = min(t for t in (due, deadline, now + 1.0) if t is not None)
            # What is queued already is taken at once; otherwise wait for the next item
            # under a timeout (wait_for would wrap every get in a task of its own).
            try:
                item = self.inbox.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    async with asyncio.timeout(max(0.0, limit - now)):
                        item = await self.inbox.get()
                except TimeoutError:
                    continue
            if item.kind == "joined":
                if until is Until.AGENT_JOINED:
                    return spent  # the flow counts the online agents again
                continue
            if item.kind == "lost":
                verdict = self.engine.agent_lost(AgentLost(item.agent, time.monotonic()))
                if verdict.lost_from_round:
                    data = {"agent": item.agent}
                    await self.events.emit(
                        EventName.AGENT_LOST, self.flow.completed_rounds + 1, data
                    )
                continue
            began = time.perf_counter()
            try:
                if item.kind == "update":
                    await self._take_update(item)
                elif item.kind == "result":
                    meta = decode_result(item.payload, 1 << 20)
                    self._log_verdict(
                        self.engine.result_arrived(item.agent, meta, time.monotonic())
                    )
            except Rejected as exc:  # undecodable: the engine never saw it
                self.engine.rejected[exc.reason] += 1
                self._log_verdict(Refused(item.agent, exc.reason, exc.detail))
            finally:
                spent += time.perf_counter() - began

    def _log_verdict(self, verdict: object) -> None:
        if isinstance(verdict, Refused):
            log.warning(
                "job %s round %d: rejected reply from %s: %s: %s",
                self.job,
                self.flow.completed_rounds + 1,
                verdict.agent,
                verdict.reason,
                verdict.detail,
            )
        elif isinstance(verdict, Late):
            log.info("job %s: late reply from %s", self.job, verdict.agent)

    async def _take_update(self, item: Inbound) -> None:
        """Reassemble and decode an update, let the engine judge it, write an admitted one."""
        max_bytes = self.config.max_update_bytes
        if chunking.is_chunk(item.payload):
            try:
                done = self._chunks.offer_unverified(item.agent, item.payload, time.monotonic())
                if done is None:
                    return
                # SHA-256 of a whole update (~30 ms for 44 MB) off the event loop.
                whole = await asyncio.to_thread(chunking.verify, done)
            except InvalidMessage as exc:
                raise Rejected(exc.reason, exc.detail) from exc
            item = Inbound(item.kind, item.agent, whole, item.received)
        large = len(item.payload) > INLINE_DECODE_BYTES
        if large:
            meta, tensors = await asyncio.to_thread(decode_update, item.payload, max_bytes)
        else:
            meta, tensors = decode_update(item.payload, max_bytes)
        for verdict in self.engine.update_arrived(item.agent, meta, time.monotonic()):
            if not isinstance(verdict, WriteRow):
                self._log_verdict(verdict)
                continue
            # Row = the agent's place in the dispatch order, not its arrival: the FedAvg sum
            # (and so the whole run) is then the same whatever order the bus delivers in.
            assert self._stack is not None
            row = self._stack.row(verdict.row)
            try:
                if large:
                    await asyncio.to_thread(write_update, meta, tensors, self.layout, row)
                else:
                    write_update(meta, tensors, self.layout, row)
            except Rejected as exc:
                self._log_verdict(self.engine.row_rejected(item.agent, exc.reason, exc.detail))
            else:
                self.engine.row_written(item.agent, len(item.payload), time.monotonic())


def _add_if_finite(model: np.ndarray, delta: np.ndarray) -> np.ndarray | None:
    """model + delta, written over ``delta``; None when the sum is not finite everywhere."""
    np.add(model, delta, out=delta)
    with np.errstate(over="ignore", invalid="ignore"):
        return delta if bool(np.isfinite(delta.sum(dtype=np.float32))) else None


def _list_state(state: Any) -> Any:
    return [_list_state(s) for s in state] if isinstance(state, tuple) else state


def _tuple_state(state: Any) -> Any:
    return tuple(_tuple_state(s) for s in state) if isinstance(state, list) else state
