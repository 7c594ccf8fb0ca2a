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
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from edge_agent.compat import TaskGroup
from edge_agent.compute_placement import ComputePlacement
from edge_agent.error_feedback import ResidualStore
from edge_agent.identity import AgentIdentity, TrainFn, ValidateFn
from edge_agent.link_shaper import LinkShaper
from edge_agent.measurements import Measurements
from edge_agent.model_arrivals import ModelArrivals
from edge_agent.model_store import GlobalModel, ModelStore
from edge_agent.packages import (
    AgentPackages,
    LoadedPackage,
    train_with_package,
)
from edge_agent.replies import (
    REFUSED_MODEL_MISSING,
    REFUSED_MODEL_MOVED_ON,
    failure_reply,
    refused_validation,
)
from edge_agent.round_resources import RoundResources
from edge_agent.telemetry import TelemetryPublisher, TelemetrySource
from edge_agent.trainer import LocalTrainer
from edge_agent.updates import UpdatePlan, build_update, describe
from edge_agent.validation import validate
from edge_agent.wall_training import train_on_wall
from fedbus.packages import PackageRefused
from fedbus.protocol import bus
from fedbus.protocol.errors import FedbusProtocolError
from fedbus.protocol.formulas import training_seed
from fedbus.protocol.messages import (
    AgentStatus,
    ResultMeta,
    Task,
    Telemetry,
    Timings,
    decode_envelope,
    encode_envelope,
    encode_json,
)
from fedbus.protocol.topics import TopicKind, Topics

log = logging.getLogger(__name__)

# The last will's ts: this long after the session's online status (statuses apply in ts order).
WILL_AFTER_ONLINE = 1e-3

MODEL_WAIT_SECONDS = 60.0
# Models are retained, and every (re)subscribe makes the broker send the retained ones
# again: QoS 1 would add nothing but a PUBACK per agent and model to the round's path.
MODEL_QOS = 0

T = TypeVar("T")


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
        shaper: LinkShaper | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        telemetry_interval: float = 0.0,
        telemetry_sources: Sequence[TelemetrySource] | None = None,
        telemetry_mode: str = "live",
        packages: AgentPackages | None = None,
        validate_fn: ValidateFn | None = None,
        residuals: ResidualStore | None = None,
    ) -> None:
        """``residuals``: error-feedback memory, shared by an emulator's agents."""
        self.identity = identity
        self.profile = identity.profile  # refreshed with measurements after each job's first task
        self.broker = broker
        self.topics = Topics(broker.prefix)
        self.trainer = trainer
        self.models = models
        self.compute_lock = compute_lock or asyncio.Lock()
        self.train_fn = train_fn or self._train_wall
        self.subscribe_models = subscribe_models
        self.packages = packages
        self.validate_fn = validate_fn
        self.residuals = residuals if residuals is not None else ResidualStore()
        self._link = bus.Link()
        self.tasks_done = 0
        self._queue: asyncio.Queue[Task] = asyncio.Queue()
        self._buffer = bytearray()
        self._placement = ComputePlacement()  # on the loop or in a thread, by last cost
        # Time is measured on the monotonic clock only: a device's calendar clock may be
        # hours off (no battery-backed clock, no NTP). ``clock`` (the calendar) only stamps
        # status messages and judges a task that carries no relative timeout.
        self.clock = clock
        self.monotonic = monotonic
        self.shaper = shaper
        self.measurements = Measurements()
        self.resources = RoundResources(trainer.device)
        self._received: dict[str, float] = {}  # task id -> monotonic time of receipt
        self._task_received = 0.0  # receipt time of the task being trained
        # When the update went to the link: the next model may beat its PUBACK's processing.
        self._handed_off: float | None = None
        self._arrivals = ModelArrivals()  # when models came, so when rounds began
        self._profiled: set[str] = set()  # jobs whose measurements the profile carries
        self._session_began = 0.0  # this MQTT session's online-status stamp
        self.telemetry = (
            TelemetryPublisher(
                identity.agent_id,
                telemetry_interval,
                self._publish_telemetry,
                telemetry_sources,
                clock=clock,
                mode=telemetry_mode,
            )
            if telemetry_interval > 0
            else None
        )

    @property
    def agent_id(self) -> str:
        return self.identity.agent_id

    def _status(self, state: str, ts: float | None = None) -> bytes:
        profile = self.profile if state == "online" else None
        stamp = self.clock() if ts is None else ts
        return encode_json(
            AgentStatus(agent=self.agent_id, state=state, profile=profile, ts=stamp)  # type: ignore[arg-type]
        )

    async def run(self) -> None:
        """Serve until cancelled, reconnecting with backoff when the broker goes away.

        The task worker lives outside the connection: a task being trained when the
        connection drops is finished and its update published once the agent is back (the
        persistent session also kept any tasks sent meanwhile); a task whose deadline has
        passed by then is abandoned rather than trained for nothing.
        """
        async with TaskGroup() as group:
            group.create_task(self._work(), name=f"{self.agent_id}-work")
            if self.telemetry is not None:
                group.create_task(self.telemetry.run(), name=f"{self.agent_id}-telemetry")
            where = f"agent {self.agent_id} at {self.broker.host}:{self.broker.port}"
            await bus.run_with_reconnect(self._session, where, self._link.down)

    @property
    def connected(self) -> asyncio.Event:
        """Set while the agent has a live, subscribed session."""
        return self._link.connected

    async def _publish(self, topic: str, payload: bytes | bytearray, transfer: str) -> None:
        """Publish once connected; a dropped session's publish is sent again on the next."""
        if self.shaper is not None:
            await self.shaper.send(len(payload))
        await self._link.publish(
            topic, payload, transfer=transfer, chunk_size=self.broker.chunk_size
        )

    async def _publish_telemetry(self, message: Telemetry) -> None:
        payload = encode_json(message)
        if self.shaper is not None:
            await self.shaper.send(len(payload))
        await self._link.publish(
            self.topics.agent_telemetry(self.agent_id),
            payload,
            transfer="telemetry",
            chunk_size=self.broker.chunk_size,
            qos=0,
        )

    async def _session(self) -> None:
        # The coordinator applies statuses in ts order: the last will, written now but sent
        # when the session dies, is stamped just after this session's online status.
        began = self._session_began = self.clock()
        client = bus.make_client(
            self.broker,
            f"agent-{self.agent_id}",
            will_topic=self.topics.agent_status(self.agent_id),
            will_payload=self._status("offline", began + WILL_AFTER_ONLINE),
        )
        async with client:
            await client.subscribe(self.topics.agent_tasks(self.agent_id), qos=1)
            if self.subscribe_models:
                await client.subscribe(self.topics.all_job_models(), qos=MODEL_QOS)
            await client.publish(
                self.topics.agent_status(self.agent_id),
                self._status("online", began),
                qos=1,
                retain=True,
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
            began = self.monotonic()
            if self.shaper is not None:
                await self.shaper.receive(len(payload))
            if parsed.kind in (TopicKind.JOB_MODEL, TopicKind.JOB_MODEL_CHUNK):
                await self._receive_model(parsed.job or "", payload, began)
            elif parsed.kind in (TopicKind.PACKAGE, TopicKind.PACKAGE_CHUNK):
                if self.packages is not None and parsed.package is not None:
                    await self.packages.offer(parsed.package, payload)
            elif parsed.kind is TopicKind.AGENT_TASKS:
                task, _ = decode_envelope(Task, payload)
                self._received[task.task_id] = began
                self._queue.put_nowait(task)
        except Exception as exc:  # no message ends the agent (issue #16): drop it and serve on
            log.warning("agent %s: dropped message on %s: %s", self.agent_id, message.topic, exc)

    async def _receive_model(self, job: str, payload: bytes | bytearray, began: float) -> None:
        """Offer a model (or chunk) to the store; time each new model's download."""
        self._arrivals.piece(job, began, len(payload))
        before = self.models.latest(job)
        try:
            model = await self.models.offer(payload, key=job)
        except BaseException:
            self._arrivals.dropped(job)
            raise
        if model is not None and model is not before:
            download = self._arrivals.fetched(job, model.version, self.monotonic())
            if download is not None:
                self.measurements.observe_download(*download)
        elif model is not None:
            self._arrivals.dropped(job)  # a version already held: nothing was fetched

    def _expired(self, task: Task) -> bool:
        """Past its time: the relative timeout from receipt, else the absolute deadline."""
        received = self._received.get(task.task_id)
        if task.timeout is not None and received is not None:
            return self.monotonic() - received > task.timeout
        return task.deadline is not None and self.clock() > task.deadline

    async def _work(self) -> None:
        while True:
            task = await self._queue.get()
            if self._expired(task):
                self._received.pop(task.task_id, None)
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
                await self._refuse(task, REFUSED_MODEL_MISSING)
            except Exception as exc:
                # One task's failure must not take the agent down (nor, in an emulator, the
                # thousand agents sharing its task group): say so to the coordinator, which
                # counts a failure instead of waiting out the deadline, and serve on.
                log.exception("agent %s: task %s failed", self.agent_id, task.task_id)
                await self._report_failure(task, describe(exc))
            self._received.pop(task.task_id, None)
            self._arrivals.idle(self._handed_off or self.monotonic())
            self._handed_off = None
            if self.telemetry is not None and self.telemetry.buffered:
                await self.telemetry.flush()  # batch mode: between tasks, off the round's path
            self.tasks_done += 1

    async def _report_failure(
        self, task: Task, reason: str, validation: ResultMeta | None = None
    ) -> None:
        meta = failure_reply(task, self.agent_id, reason, validation)
        if task.kind == "validate":
            topic = self.topics.job_result(task.job, self.agent_id)
        else:
            topic = self.topics.job_update(task.job, self.agent_id)
        await self._publish(topic, encode_envelope(meta), task.task_id)

    async def _package(self, task: Task) -> LoadedPackage | None:
        """The task's compute package, fetched and verified if need be (or PackageRefused)."""
        sha = task.config.package
        if sha is None:
            return None
        if self.packages is None:
            raise PackageRefused("this agent runs no compute packages (no package cache set up)")
        package = await self.packages.ensure(sha, self._link, self.topics)
        self.trainer.trust(package.modules)  # verified against the hash this agent pinned
        return package

    async def _refuse(self, task: Task, reason: str) -> None:
        """Say that ``task`` cannot be done, so the coordinator stops waiting for it.

        A folded validation (``validate_first``) goes with it: run on the previous model
        when that is the version asked (the model moved on by one: the validation can still
        be answered), else refused; inside the failed update when asked ``in_update``, else
        as a result of its own.
        """
        request = task.validate_first
        refused: ResultMeta | None = None
        previous = self.models.held_previous(task.job, task.model_version)
        if request is not None and previous is not None:
            async with self.compute_lock:
                refused = await self._validate(task, previous, request.task_id, request.round)
        else:
            refused = refused_validation(task, self.agent_id, reason)
        if request is not None and refused is not None and not request.in_update:
            await self._publish(
                self.topics.job_result(task.job, self.agent_id),
                encode_envelope(refused),
                request.task_id,
            )
            refused = None
        await self._report_failure(task, reason, refused)

    async def _handle(self, task: Task) -> None:
        received = self._received.get(task.task_id, self.monotonic())
        package = await self._package(task)
        model = await self.models.wait_for(
            task.job,
            task.model_version,
            MODEL_WAIT_SECONDS,
            task.run_epoch,
            previous=task.kind == "validate",
        )
        if model is None:
            log.info("agent %s: task %s is for an old model version", self.agent_id, task.task_id)
            await self._refuse(task, REFUSED_MODEL_MOVED_ON)
            return
        received = self._arrivals.round_start(task.job, task.model_version, received)
        self._task_received = received
        t_dl = self.monotonic() - received
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
                began = self.monotonic()
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
                validated = self.monotonic() - began
            try:
                self.resources.begin()
                if package is not None and package.trains:
                    plan = await self._compute(
                        "package-train", self._train_package, task, model, package
                    )
                else:
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
                    t_ul=plan.timings.t_ul,  # planned: this upload cannot time itself
                    wall_duration=self.monotonic() - received - validated,
                ),
            )
        meta, tensors = build_update(task, self.agent_id, plan, model, folded, self.residuals)
        meta = meta.model_copy(update={"resources": self.resources.end()})
        payload = encode_envelope(meta, tensors, into=self._buffer)
        try:
            began = self._handed_off = self.monotonic()
            await self._publish(
                self.topics.job_update(task.job, self.agent_id), payload, task.task_id
            )
            self.measurements.observe_upload(len(payload), self.monotonic() - began)
        except BaseException:
            # paho may still hold the payload to resend after a reconnect: never reuse it.
            self._buffer = bytearray()
            raise
        # Acknowledged (QoS 1): paho has let go of it, so next round encodes into the same
        # already-mapped memory instead of faulting in a fresh buffer.
        self._buffer = payload
        if result_sent is not None:
            await result_sent
        if task.job not in self._profiled and task.config.clock == "wall":
            await self._refresh_profile(task)

    async def _refresh_profile(self, task: Task) -> None:
        """Republish the retained status with what this job's first task measured."""
        self._profiled.add(task.job)
        measured = self.measurements.as_static(task.config.model)
        static = {**self.profile.static, **measured}
        self.profile = self.profile.model_copy(update={"static": static})
        await self._link.publish(
            self.topics.agent_status(self.agent_id),
            # Stamped as the session's online status, so the last will (stamped just after
            # it) still counts as newer when this session dies.
            self._status("online", self._session_began),
            transfer=f"{task.task_id}-status",
            chunk_size=self.broker.chunk_size,
            retain=True,
        )

    async def _compute(self, kind: str, fn: Callable[..., T], *args: Any) -> T:
        # A train_fn set from outside (also after construction) may block on the loop.
        custom = kind == "train" and self.train_fn != self._train_wall
        return await self._placement.run(kind, fn, *args, may_inline=not custom)

    async def _validate(
        self, task: Task, model: GlobalModel, task_id: str, round_: int
    ) -> ResultMeta:
        return await validate(
            task,
            model,
            task_id,
            round_,
            identity=self.identity,
            trainer=self.trainer,
            packages=self.packages,
            validate_fn=self.validate_fn,
            compute=self._compute,
        )

    def _train_package(self, task: Task, model: GlobalModel, package: LoadedPackage) -> UpdatePlan:
        outcome = train_with_package(
            task, model.tensors, model.layout, self.identity.partition, package
        )
        return UpdatePlan(outcome, Timings())

    def _train_wall(self, task: Task, model: GlobalModel, identity: AgentIdentity) -> UpdatePlan:
        received = self._task_received
        result = train_on_wall(
            self.trainer,
            self.measurements,
            task,
            model,
            identity.partition,
            seed=training_seed(task.config.seed, task.round, identity.partition),
            elapsed=lambda: self.monotonic() - received,
        )
        return UpdatePlan(result.outcome, Timings(t_ul=result.upload_s))
