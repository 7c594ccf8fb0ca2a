"""The coordinator service: one MQTT connection, one receive loop, one runner per job.

The receive loop only routes: agent status to the registry (and "lost" notices to the
runners), updates and results to the owning job's inbox, submissions to new runners.
Runners publish through :meth:`CoordinatorService.publish`. The connection is a
persistent MQTT 5 session with a fixed client id, so updates published while the
coordinator was down are delivered when it comes back; it reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

from coordinator.config import JobConfig, JobConfigError, parse_job
from coordinator.job_control import (
    cancel_reply,
    log_arrival,
    log_event,
    logs_reply,
    read_log_tail,
)
from coordinator.job_control import log as job_log
from coordinator.job_leases import PoolLeases
from coordinator.job_runner import Inbound, JobRunner
from coordinator.registry import AgentRegistry, Change
from fedbus.protocol import bus
from fedbus.protocol.errors import FedbusProtocolError
from fedbus.protocol.messages import (
    AgentStatus,
    CoordinatorStatus,
    JobControl,
    JobStatus,
    JobSubmission,
    decode_json,
    encode_json,
)
from fedbus.protocol.topics import TopicKind, Topics, check_id

log = logging.getLogger(__name__)

RunnerHook = Callable[[JobRunner], None]


class CoordinatorService:
    def __init__(
        self,
        broker: bus.BrokerSettings,
        *,
        runs_dir: Path,
        coordinator_id: str = "coordinator",
        accept_submissions: bool = True,
        on_runner: RunnerHook | None = None,
        policy: str = "fifo",
    ) -> None:
        self.broker = broker
        self.topics = Topics(broker.prefix)
        self.runs_dir = runs_dir
        self.coordinator_id = coordinator_id
        self.accept_submissions = accept_submissions
        self.on_runner = on_runner
        self.registry = AgentRegistry()
        self.runners: dict[str, JobRunner] = {}
        self.results: dict[str, bool] = {}
        self._link = bus.Link()
        self._pending: list[JobConfig] = []
        self._group: asyncio.TaskGroup | None = None
        # One device pool for all jobs: which agents each job may ask, and why it waits.
        self.leases = PoolLeases(self.registry, policy, on_change=self._status_changed)
        self._job_tasks: dict[str, asyncio.Task[bool]] = {}
        self._cancelled: set[str] = set()

    @property
    def connected(self) -> asyncio.Event:
        """Set while the service has a live session subscribed to its topics."""
        return self._link.connected

    # -- publishing for runners -----------------------------------------------------
    async def publish(
        self,
        topic: str,
        payload: bytes | bytearray,
        qos: int,
        retain: bool,
        chunk_topic: Callable[[int], str] | None = None,
    ) -> None:
        """Publish (as chunks when large), waiting out a reconnect instead of failing the job."""
        await self._link.publish(
            topic,
            payload,
            transfer=f"c{time.monotonic_ns():x}",
            chunk_size=self.broker.chunk_size,
            qos=qos,
            retain=retain,
            chunk_topic=chunk_topic,
        )

    def _status(self, state: str) -> bytes:
        return encode_json(
            CoordinatorStatus(
                coordinator=self.coordinator_id,
                state=state,  # type: ignore[arg-type]
                jobs=sorted(self.runners),
                ts=time.time(),
                accepts_jobs=self.accept_submissions,
                waiting=dict(self.leases.waiting),
                policy=self.leases.policy.value,
            )
        )

    def _status_changed(self) -> None:
        """Jobs came, went or wait for another reason: republish the retained status."""
        if self._group is None or not self._link.connected.is_set():
            return  # the next session publishes it
        publishing = self._publish_status()
        try:
            self._group.create_task(publishing, name="coordinator-status")
        except RuntimeError:  # the service is stopping; its last will says so
            publishing.close()

    async def _publish_status(self) -> None:
        with contextlib.suppress(bus.MqttError):
            await self.publish(
                self.topics.coordinator_status(), self._status("online"), qos=1, retain=True
            )

    # -- serving ----------------------------------------------------------------------
    def submit(self, config: JobConfig) -> None:
        """Queue a job; it starts once the service is connected."""
        self._pending.append(config)
        if self._group is not None:
            self._start_pending()

    def _start_pending(self) -> None:
        assert self._group is not None
        while self._pending:
            config = self._pending.pop(0)
            if config.name in self.runners:
                log.warning("job %s is already running; submission ignored", config.name)
                continue
            runner = JobRunner(
                config,
                topics=self.topics,
                publish=self.publish,
                registry=self.registry,
                run_dir=self.runs_dir / config.name,
            )
            self.runners[config.name] = runner
            runner.events.listeners.append(log_event)
            runner.lease = self.leases.add(config, functools.partial(_rounds_left, runner))
            log_arrival(config, self.leases.policy.value)
            self._status_changed()
            if self.on_runner is not None:
                self.on_runner(runner)
            self._group.create_task(self._run_job(runner), name=f"job-{config.name}")

    async def _run_job(self, runner: JobRunner) -> None:
        job = runner.job
        inner = asyncio.ensure_future(runner.run())
        self._job_tasks[job] = inner
        try:
            self.results[job] = await inner
        except asyncio.CancelledError:
            if job not in self._cancelled or not inner.cancelled():
                raise  # the service itself is stopping
            self.results[job] = False
            job_log.info("job %s cancelled after round %d", job, runner.flow.completed_rounds)
            status = JobStatus(
                job=job,
                state="cancelled",
                round=runner.flow.completed_rounds,
                rounds=runner.config.rounds,
                phase="cancelled",
                model_version=runner.flow.model_version,
                last_accuracy=runner.flow.last_accuracy,
                ts=time.time(),
            )
            await self.publish(self.topics.job_status(job), encode_json(status), 1, True)
        finally:
            self._job_tasks.pop(job, None)
            self.runners.pop(job, None)
            # Agents still busy with its tasks (stragglers; a cancelled round's agents) stay
            # held until they answer (below, in _route) or their deadline passes.
            straggling = runner.straggling
            self.leases.remove(job, keep=straggling)
            if straggling:
                wait = max(straggling.values()) - time.monotonic()
                asyncio.get_running_loop().call_later(max(wait, 0.0), self.leases.release, job)
            job_log.info(
                "job %s ended: %s", job, "ok" if self.results.get(job) else "not completed"
            )
            self._status_changed()
            self._job_done.set()

    async def _control(self, request: JobControl) -> None:
        """``coordinator jobs cancel|logs``: act, and answer the asking client."""
        if request.action == "cancel":
            task = self._job_tasks.get(request.job)
            if task is not None:
                self._cancelled.add(request.job)
                task.cancel()
            reply = cancel_reply(request, running=task is not None)
        else:
            path = self.runs_dir / request.job / "events.jsonl"
            reply = logs_reply(request, await asyncio.to_thread(read_log_tail, path, request.tail))
        if request.reply_to is not None:
            with contextlib.suppress(bus.MqttError):
                await self.publish(
                    self.topics.control_reply(request.reply_to), encode_json(reply), 1, False
                )

    async def serve(self, *, exit_when_idle: bool = False) -> dict[str, bool]:
        """Serve until cancelled, or (``exit_when_idle``) until every submitted job ended."""
        self._job_done = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                connection = group.create_task(self._connection(), name="mqtt-connection")
                self._start_pending()
                if exit_when_idle:
                    while self.runners or self._pending:
                        self._job_done.clear()
                        await self._job_done.wait()
                    connection.cancel()
        finally:
            self._group = None
        return self.results

    async def _connection(self) -> None:
        await bus.run_with_reconnect(self._session, "coordinator", self._link.down)

    async def _session(self) -> None:
        client = bus.make_client(
            self.broker,
            self.coordinator_id,
            will_topic=self.topics.coordinator_status(),
            will_payload=self._status("offline"),
        )
        async with client:
            await client.subscribe(self.topics.all_agent_status(), qos=1)
            await client.subscribe(self.topics.all_job_updates(), qos=1)
            await client.subscribe(self.topics.all_job_results(), qos=1)
            if self.accept_submissions:
                await client.subscribe(self.topics.job_submit(), qos=1)
                await client.subscribe(self.topics.job_control(), qos=1)
            await client.publish(
                self.topics.coordinator_status(), self._status("online"), qos=1, retain=True
            )
            self._link.up(client)
            if self._group is not None:
                for runner in list(self.runners.values()):
                    self._group.create_task(runner.republish(), name=f"republish-{runner.job}")
            try:
                async for message in bus.messages(client):
                    self._route(message)
            except asyncio.CancelledError:
                with contextlib.suppress(bus.MqttError, TimeoutError):
                    await asyncio.wait_for(
                        client.publish(
                            self.topics.coordinator_status(),
                            self._status("offline"),
                            qos=1,
                            retain=True,
                        ),
                        2.0,
                    )
                raise
            finally:
                self._link.down(client)

    def _route(self, message: bus.Message) -> None:
        topic = str(message.topic)
        payload = message.payload
        try:
            parsed = self.topics.parse(topic)
            if not isinstance(payload, bytes | bytearray):
                raise FedbusProtocolError("payload is not bytes")
            match parsed.kind:
                case TopicKind.AGENT_STATUS:
                    self._agent_status(parsed.agent or "", bytes(payload))
                case TopicKind.JOB_UPDATE | TopicKind.JOB_RESULT:
                    runner = self.runners.get(parsed.job or "")
                    if runner is None:
                        log.debug("message for job %s, which is not running", parsed.job)
                        if parsed.kind is TopicKind.JOB_UPDATE:  # a late answer: it is free
                            self.leases.release(parsed.job or "", [parsed.agent or ""])
                        return
                    kind = "update" if parsed.kind is TopicKind.JOB_UPDATE else "result"
                    runner.inbox.put_nowait(
                        Inbound(kind, parsed.agent or "", payload, time.monotonic())
                    )
                case TopicKind.JOB_SUBMIT:
                    submission = decode_json(JobSubmission, payload)
                    self.submit(parse_job(submission.config, submission.source))
                case TopicKind.JOB_CONTROL:
                    request = decode_json(JobControl, payload)
                    check_id(request.job, "job id")
                    if request.reply_to is not None:
                        check_id(request.reply_to, "client id")
                    if self._group is not None:
                        self._group.create_task(self._control(request), name="job-control")
                case _:
                    pass
        except (FedbusProtocolError, JobConfigError) as exc:
            log.warning("dropped message on %s: %s", topic, exc)

    def _agent_status(self, agent: str, payload: bytes) -> None:
        status = decode_json(AgentStatus, payload)
        if status.agent != agent:
            raise FedbusProtocolError(f"status on {agent!r}'s topic names {status.agent!r}")
        change = self.registry.apply(status, time.time())
        if change is Change.WENT_OFFLINE:
            for runner in self.runners.values():
                runner.inbox.put_nowait(Inbound("lost", agent))
        elif change is Change.CAME_ONLINE:
            # A runner waiting for agents counts again now, not at its next poll.
            for runner in self.runners.values():
                runner.inbox.put_nowait(Inbound("joined", agent))


def _rounds_left(runner: JobRunner) -> int:
    return runner.config.rounds - runner.flow.completed_rounds
