"""One edge agent's asyncio shell: connection, status, tasks in, updates and results out.

The agent announces itself with a retained status (and a last will that flips it to
``offline``), receives tasks on its own topic, reads the global model from the job's
retained model topic, trains in a worker thread so MQTT keep-alives keep flowing, and
publishes a msgpack update (dense, or top-k sparse when the task asks for a smaller
payload). Tasks run one at a time in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from edge_agent.compression import effective_keep, sparsify
from edge_agent.model_store import GlobalModel, ModelStore
from edge_agent.trainer import LocalTrainer, TrainOutcome
from fedbus.protocol import bus
from fedbus.protocol.codec import SparseTensor, Tensor
from fedbus.protocol.errors import FedbusProtocolError
from fedbus.protocol.messages import (
    AgentProfile,
    AgentStatus,
    ResultMeta,
    Task,
    Timings,
    UpdateMeta,
    decode_envelope,
    encode_envelope,
    encode_json,
)
from fedbus.protocol.topics import TopicKind, Topics

log = logging.getLogger(__name__)

MODEL_WAIT_SECONDS = 60.0
# Models are retained, and every (re)subscribe makes the broker send the retained ones
# again: QoS 1 would add nothing but a PUBACK per agent and model to the round's path.
MODEL_QOS = 0
# The agent's own trainer runs a train or validate computation on the event loop itself
# when the same kind last took under INLINE_CPU_SECONDS of CPU and INLINE_WALL_SECONDS of
# wall time. Handing a few ms of training to a worker thread costs more than it saves:
# measured with 50 agent processes on two cores (digits MLP, 20 steps, ~4 ms of CPU a
# round), rounds took 0.23-0.32 s inline against 0.29-0.42 s through asyncio.to_thread,
# in back-to-back runs. The wall bound is loose on purpose: on a shared CPU the wall time
# is mostly waiting for a core (10 ms of CPU took 200-350 ms of wall with 50 agents on 2
# cores; a 0.25 s bound sent about half the training to a thread), and blocking the loop for
# up to 2 s delays nothing that matters (keep-alives are 15 s apart, tasks run one at a
# time). The CPU bound is above the first round's cost (torch warms up: 40-70 ms of CPU
# for that MLP), so the second round already runs inline. Longer work, work not measured
# yet and a custom train_fn (it may wait on something only the loop can deliver) stay
# off it.
INLINE_CPU_SECONDS = 0.1
INLINE_WALL_SECONDS = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class AgentIdentity:
    agent_id: str
    partition: int
    profile: AgentProfile


@dataclass(frozen=True)
class UpdatePlan:
    """What to upload: the outcome plus the virtual timings when the clock is virtual."""

    outcome: TrainOutcome
    timings: Timings


# Adaptive training and virtual clocks replace how a task is trained and timed.
TrainFn = Callable[[Task, GlobalModel, AgentIdentity], UpdatePlan]


class EdgeAgent:
    def __init__(
        self,
        identity: AgentIdentity,
        broker: bus.BrokerSettings,
        trainer: LocalTrainer,
        models: ModelStore,
        *,
        compute_lock: asyncio.Lock | None = None,
        train_fn: TrainFn | None = None,
        subscribe_models: bool = True,
    ) -> None:
        self.identity = identity
        self.broker = broker
        self.topics = Topics(broker.prefix)
        self.trainer = trainer
        self.models = models
        self.compute_lock = compute_lock or asyncio.Lock()
        self.train_fn = train_fn or self._train_wall
        self.subscribe_models = subscribe_models
        self._link = bus.Link()
        self.tasks_done = 0
        self._queue: asyncio.Queue[Task] = asyncio.Queue()
        self._buffer = bytearray()
        # (CPU, wall) seconds the last compute of each kind ("train", "validate") took.
        self._compute_cost: dict[str, tuple[float, float]] = {}

    @property
    def agent_id(self) -> str:
        return self.identity.agent_id

    def _status(self, state: str) -> bytes:
        profile = self.identity.profile if state == "online" else None
        return encode_json(
            AgentStatus(agent=self.agent_id, state=state, profile=profile, ts=time.time())  # type: ignore[arg-type]
        )

    async def run(self) -> None:
        """Serve until cancelled, reconnecting with backoff when the broker goes away.

        The task worker lives outside the connection: a task being trained when the
        connection drops is finished and its update published once the agent is back (the
        persistent session also kept any tasks sent meanwhile); a task whose deadline has
        passed by then is abandoned rather than trained for nothing.
        """
        async with asyncio.TaskGroup() as group:
            group.create_task(self._work(), name=f"{self.agent_id}-work")
            where = f"agent {self.agent_id} at {self.broker.host}:{self.broker.port}"
            await bus.run_with_reconnect(self._session, where, self._link.down)

    @property
    def connected(self) -> asyncio.Event:
        """Set while the agent has a live, subscribed session."""
        return self._link.connected

    async def _publish(self, topic: str, payload: bytes | bytearray, transfer: str) -> None:
        """Publish once connected; a dropped session's publish is sent again on the next."""
        await self._link.publish(
            topic, payload, transfer=transfer, chunk_size=self.broker.chunk_size
        )

    async def _session(self) -> None:
        client = bus.make_client(
            self.broker,
            f"agent-{self.agent_id}",
            will_topic=self.topics.agent_status(self.agent_id),
            will_payload=self._status("offline"),
        )
        async with client:
            await client.subscribe(self.topics.agent_tasks(self.agent_id), qos=1)
            if self.subscribe_models:
                await client.subscribe(self.topics.all_job_models(), qos=MODEL_QOS)
            await client.publish(
                self.topics.agent_status(self.agent_id), self._status("online"), qos=1, retain=True
            )
            self._link.up(client)
            try:
                async for message in bus.messages(client):
                    await self._route(message)
            except asyncio.CancelledError:
                # A clean DISCONNECT does not fire the last will, so say goodbye ourselves.
                with contextlib.suppress(bus.MqttError, TimeoutError):
                    await asyncio.wait_for(
                        client.publish(
                            self.topics.agent_status(self.agent_id),
                            self._status("offline"),
                            qos=1,
                            retain=True,
                        ),
                        2.0,
                    )
                raise
            finally:
                self._link.down(client)

    async def _route(self, message: bus.Message) -> None:
        try:
            parsed = self.topics.parse(str(message.topic))
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                raise FedbusProtocolError("payload is not bytes")
            if parsed.kind in (TopicKind.JOB_MODEL, TopicKind.JOB_MODEL_CHUNK):
                await self.models.offer(payload, key=parsed.job or "")
            elif parsed.kind is TopicKind.AGENT_TASKS:
                task, _ = decode_envelope(Task, payload)
                self._queue.put_nowait(task)
        except Exception as exc:  # no message ends the agent (issue #16): drop it and serve on
            log.warning("agent %s: dropped message on %s: %s", self.agent_id, message.topic, exc)

    async def _work(self) -> None:
        while True:
            task = await self._queue.get()
            if task.deadline is not None and time.time() > task.deadline:
                log.info(
                    "agent %s: skipping task %s past its deadline", self.agent_id, task.task_id
                )
                continue
            try:
                await self._handle(task)
            except TimeoutError:
                log.warning(
                    "agent %s: model %s v%d never arrived",
                    self.agent_id,
                    task.job,
                    task.model_version,
                )
            except Exception as exc:
                # One task's failure must not take the agent down (nor, in an emulator, the
                # thousand agents sharing its task group): say so to the coordinator, which
                # counts a failure instead of waiting out the deadline, and serve on.
                log.exception("agent %s: task %s failed", self.agent_id, task.task_id)
                await self._report_failure(task, describe(exc))
            self.tasks_done += 1

    async def _report_failure(
        self, task: Task, reason: str, validation: ResultMeta | None = None
    ) -> None:
        common = {
            "job": task.job,
            "round": task.round,
            "agent": self.agent_id,
            "task_id": task.task_id,
            "success": False,
            "reason": reason,
        }
        meta: UpdateMeta | ResultMeta
        if task.kind == "validate":
            meta = ResultMeta(model_version=task.model_version, **common)
            topic = self.topics.job_result(task.job, self.agent_id)
        else:
            meta = UpdateMeta(
                base_version=task.model_version, encoding="none", validation=validation, **common
            )
            topic = self.topics.job_update(task.job, self.agent_id)
        await self._publish(topic, encode_envelope(meta), task.task_id)

    async def _handle(self, task: Task) -> None:
        received = time.perf_counter()
        model = await self.models.wait_for(task.job, task.model_version, MODEL_WAIT_SECONDS)
        if model is None:
            log.info("agent %s: task %s is for an old model version", self.agent_id, task.task_id)
            return
        t_dl = time.perf_counter() - received
        if task.kind == "validate":
            async with self.compute_lock:
                result = await self._validate(task, model, task.task_id, task.round)
            await self._publish(
                self.topics.job_result(task.job, self.agent_id),
                encode_envelope(result),
                task.task_id,
            )
            return
        result_sent: asyncio.Future[None] | None = None
        folded: ResultMeta | None = None  # the validation that rides in the update
        validated = 0.0
        async with self.compute_lock:
            if task.validate_first is not None:
                began = time.perf_counter()
                request = task.validate_first
                result = await self._validate(task, model, request.task_id, request.round)
                if request.in_update:
                    folded = result
                else:
                    # Not waiting for its PUBACK: training starts at once, the round's
                    # update is published after it on the same connection.
                    result_sent = asyncio.ensure_future(
                        self._publish(
                            self.topics.job_result(task.job, self.agent_id),
                            encode_envelope(result),
                            request.task_id,
                        )
                    )
                validated = time.perf_counter() - began
            try:
                plan = await self._compute("train", self.train_fn, task, model, self.identity)
            except Exception as exc:
                if folded is None:
                    raise
                # The failure report carries the validation: it is the only reply sent.
                log.exception("agent %s: task %s failed", self.agent_id, task.task_id)
                await self._report_failure(task, describe(exc), folded)
                return
        if task.config.clock == "wall":
            plan = UpdatePlan(
                plan.outcome,
                Timings(
                    t_dl=t_dl,
                    t_comp=plan.outcome.compute_seconds,
                    wall_duration=time.perf_counter() - received - validated,
                ),
            )
        meta, tensors = build_update(task, self.agent_id, plan, model, folded)
        payload = encode_envelope(meta, tensors, into=self._buffer)
        try:
            await self._publish(
                self.topics.job_update(task.job, self.agent_id), payload, task.task_id
            )
        except BaseException:
            # paho may still hold the payload to resend after a reconnect: never reuse it.
            self._buffer = bytearray()
            raise
        # Acknowledged (QoS 1): paho has let go of it, so next round encodes into the same
        # already-mapped memory instead of faulting in a fresh buffer.
        self._buffer = payload
        if result_sent is not None:
            await result_sent

    async def _compute(self, kind: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the loop when it was short last time, else in a worker thread."""
        cpu, wall = self._compute_cost.get(kind, (math.inf, math.inf))
        inline = (
            cpu < INLINE_CPU_SECONDS
            and wall < INLINE_WALL_SECONDS
            # A train_fn set from outside (also after construction) may block on the loop.
            and (kind != "train" or self.train_fn == self._train_wall)
        )
        result, cost = timed(fn, *args) if inline else await asyncio.to_thread(timed, fn, *args)
        self._compute_cost[kind] = cost
        return result

    async def _validate(
        self, task: Task, model: GlobalModel, task_id: str, round_: int
    ) -> ResultMeta:
        """The ResultMeta of evaluating ``model``: a failure is reported, not raised."""
        common = {
            "job": task.job,
            "round": round_,
            "agent": self.agent_id,
            "task_id": task_id,
            "model_version": task.model_version,
        }
        try:
            loss, accuracy, n = await self._compute(
                "validate",
                self.trainer.evaluate,
                task.config,
                self.identity.partition,
                model.tensors,
            )
            meta = ResultMeta(**common, num_examples=n, loss=loss, accuracy=accuracy)
        except Exception as exc:
            # A validation's failure must not cost the training folded into the same task.
            log.exception("agent %s: validation %s failed", self.agent_id, task_id)
            meta = ResultMeta(**common, success=False, reason=describe(exc))
        return meta

    def _train_wall(self, task: Task, model: GlobalModel, identity: AgentIdentity) -> UpdatePlan:
        outcome = self.trainer.train(
            task.config,
            identity.partition,
            model.tensors,
            model.layout,
            seed=task.config.seed * 1_000_003 + task.round * 7919 + identity.partition,
        )
        outcome.keep_frac = task.config.keep_frac
        return UpdatePlan(outcome, Timings())


def describe(exc: Exception) -> str:
    """A failure's reason as it travels in an update or result (bounded in length)."""
    return f"{type(exc).__name__}: {exc}"[:500]


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, tuple[float, float]]:
    """``fn(*args)`` and the (CPU of the calling thread, wall) seconds it took."""
    cpu, wall = time.thread_time(), time.perf_counter()
    result = fn(*args)
    return result, (time.thread_time() - cpu, time.perf_counter() - wall)


def l2_norm(values: np.ndarray) -> float:
    """||values||_2 accumulated in float64: a float32 sum of squares overflows above ~1e19."""
    return math.sqrt(float(np.einsum("i,i->", values, values, dtype=np.float64)))


def build_update(
    task: Task,
    agent_id: str,
    plan: UpdatePlan,
    model: GlobalModel,
    validation: ResultMeta | None = None,
) -> tuple[UpdateMeta, dict[str, Tensor]]:
    """The update message: dense named deltas, or one sparse flat delta below keep 1."""
    outcome = plan.outcome
    value_dtype = np.float16 if task.config.value_dtype == "float16" else np.float32
    tensors: dict[str, Tensor] = {}
    encoding = "none"
    # The norm of what is uploaded (the top-k part when sparse), PyramidFL's gradient size.
    grad_norm = 0.0
    if outcome.success:
        outcome.keep_frac = effective_keep(outcome.delta.size, outcome.keep_frac, value_dtype)
        if outcome.keep_frac < 1.0:
            sparse = sparsify(outcome.delta, outcome.keep_frac, value_dtype)
            tensors["delta"] = SparseTensor(sparse.size, sparse.indices, sparse.values)
            grad_norm = l2_norm(sparse.values)
            encoding = "sparse"
        else:
            delta = outcome.delta.astype(value_dtype, copy=False)
            tensors = dict(model.layout.unflatten(delta))
            grad_norm = l2_norm(outcome.delta)
            encoding = "dense"
    meta = UpdateMeta(
        job=task.job,
        round=task.round,
        agent=agent_id,
        task_id=task.task_id,
        base_version=task.model_version,
        success=outcome.success,
        reason=outcome.reason,
        num_examples=outcome.num_examples,
        encoding=encoding,  # type: ignore[arg-type]
        utility=outcome.utility,
        grad_norm=grad_norm,
        loss=outcome.loss,
        steps=outcome.steps,
        steps_phase1=outcome.steps_phase1,
        steps_phase2=outcome.steps_phase2,
        keep_frac=outcome.keep_frac,
        timings=plan.timings,
        validation=validation,
    )
    return meta, tensors
