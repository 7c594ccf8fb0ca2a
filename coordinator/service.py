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
import logging
import time
from collections.abc import Callable
from pathlib import Path

from coordinator.config import JobConfig, JobConfigError, parse_job
from coordinator.job_runner import Inbound, JobRunner
from coordinator.registry import AgentRegistry, Change
from fedbus.protocol import bus
from fedbus.protocol.errors import FedbusProtocolError
from fedbus.protocol.messages import (
    AgentStatus,
    CoordinatorStatus,
    JobSubmission,
    decode_json,
    encode_json,
)
from fedbus.protocol.topics import TopicKind, Topics

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
            )
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
            if self.on_runner is not None:
                self.on_runner(runner)
            self._group.create_task(self._run_job(runner), name=f"job-{config.name}")

    async def _run_job(self, runner: JobRunner) -> None:
        try:
            self.results[runner.job] = await runner.run()
        finally:
            self.runners.pop(runner.job, None)
            self._job_done.set()

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
                        return
                    kind = "update" if parsed.kind is TopicKind.JOB_UPDATE else "result"
                    runner.inbox.put_nowait(
                        Inbound(kind, parsed.agent or "", payload, time.monotonic())
                    )
                case TopicKind.JOB_SUBMIT:
                    submission = decode_json(JobSubmission, payload)
                    self.submit(parse_job(submission.config, submission.source))
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
