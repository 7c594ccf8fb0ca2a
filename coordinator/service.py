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
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from coordinator.config import JobConfig, JobConfigError, parse_job
from coordinator.inbox import BoundedInbox
from coordinator.job_claim import JobClaim, JobClaimed, check_run_dir, claim, holder_description
from coordinator.job_control import answer, log_arrival, log_event
from coordinator.job_control import log as job_log
from coordinator.job_leases import PoolLeases
from coordinator.job_outcome import (
    cancelling,
    failure_event,
    job_status,
    job_succeeded,
    refusal_event,
    rounds_left,
)
from coordinator.job_runner import Inbound, JobRunner
from coordinator.registry import AgentRegistry, Change
from coordinator.rejections import RejectionLog
from fedbus.protocol import bus
from fedbus.protocol.errors import InvalidMessage
from fedbus.protocol.messages import (
    AgentStatus,
    CoordinatorStatus,
    JobControl,
    JobSubmission,
    decode_json,
    encode_json,
)
from fedbus.protocol.topics import TopicKind, Topics, check_id, is_id

log = logging.getLogger(__name__)

RunnerHook = Callable[[JobRunner], None]

# How often the service frees chunk transfers that stopped half way and republishes its
# status when its rejection counts changed.
HOUSEKEEPING_S = 5.0
# How long a shutdown waits to publish the final job and coordinator states.
FINAL_PUBLISH_S = 2.0


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
        # Why each job that failed did (the JOB_FAILED reason), by job.
        self.failures: dict[str, str] = {}
        self.rejections = RejectionLog(log)
        self._claims: dict[str, JobClaim] = {}
        self._link = bus.Link()
        self._pending: list[tuple[JobConfig, bool]] = []
        self._group: asyncio.TaskGroup | None = None
        # One device pool for all jobs: which agents each job may ask, and why it waits.
        self.leases = PoolLeases(self.registry, policy, on_change=self._status_changed)
        self._job_tasks: dict[str, asyncio.Task[bool]] = {}
        self._cancelled: set[str] = set()
        self._job_done = asyncio.Event()
        self._status_counts: dict[str, int] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.retained_cleared = 0  # agents' retained updates/results deleted
        self._shutdown_published = False
        self._on_telemetry: Callable[[str, bytes | bytearray], None] | None = None

    def attach_telemetry(self, handle: Callable[[str, bytes | bytearray], None]) -> None:
        self._on_telemetry = handle  # coordinator/metrics_http.py: with_telemetry

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

    def _status(self, state: str, *, orphaned: bool = False) -> bytes:
        jobs = sorted(self.runners)
        return encode_json(
            CoordinatorStatus(
                coordinator=self.coordinator_id,
                state=state,  # type: ignore[arg-type]
                jobs=jobs,
                ts=time.time(),
                accepts_jobs=self.accept_submissions,
                waiting=dict(self.leases.waiting),
                policy=self.leases.policy.value,
                rejected=dict(self.rejections.counts),
                orphaned=jobs if orphaned else [],
            )
        )

    def _status_changed(self) -> None:
        """Jobs came, went or wait for another reason: republish the retained status (when
        not connected, the next session publishes it; when stopping, the last will says so)."""
        if self._group is not None and self._link.connected.is_set():
            self._side(self._publish_status(), "coordinator-status")

    async def _publish_status(self) -> None:
        with contextlib.suppress(bus.MqttError):
            await self.publish(
                self.topics.coordinator_status(self.coordinator_id),
                self._status("online"),
                qos=1,
                retain=True,
            )

    # -- serving ----------------------------------------------------------------------
    def submit(self, config: JobConfig, *, new_run: bool = False) -> None:
        """Queue a job; it starts once the service is connected."""
        self._pending.append((config, new_run))
        if self._group is not None:
            self._start_pending()

    def _start_pending(self) -> None:
        assert self._group is not None
        while self._pending:
            config, new_run = self._pending.pop(0)
            if config.name in self.runners:
                self._refuse(config.name, f"job {config.name!r} is already running here")
                continue
            try:
                runner = self._make_runner(config, new_run)
            except Exception as exc:  # a bad job fails alone, with its reason
                self._refuse(config.name, str(exc) or type(exc).__name__, exc)
                continue
            self.runners[config.name] = runner
            runner.events.listeners.append(log_event)
            runner.lease = self.leases.add(config, functools.partial(rounds_left, runner))
            log_arrival(config, self.leases.policy.value)
            self._status_changed()
            if self.on_runner is not None:
                self.on_runner(runner)
            self._group.create_task(self._run_job(runner), name=f"job-{config.name}")

    def _make_runner(self, config: JobConfig, new_run: bool) -> JobRunner:
        run_dir = self.runs_dir / config.name
        held = claim(self.runs_dir, config.name, holder_description(self.coordinator_id))
        try:
            moved = check_run_dir(run_dir, config, new_run=new_run)
            if moved is not None:
                log.warning("job %s: new run; the previous one moved to %s", config.name, moved)
            runner = JobRunner(
                config,
                topics=self.topics,
                publish=self.publish,
                registry=self.registry,
                run_dir=run_dir,
            )
        except BaseException:
            held.release()
            raise
        # What waits for the job is capped on bytes, per agent and in total (coordinator/inbox.py).
        runner.inbox = BoundedInbox(
            per_agent=2 * config.max_update_bytes + 2 * self.broker.chunk_size,
            total=2 * config.dispatch_count * config.max_update_bytes,
        )
        self._claims[config.name] = held
        return runner

    def _refuse(self, job: str, reason: str, exc: BaseException | None = None) -> None:
        """A job that could not start: JOB_FAILED with its reason, nothing else touched."""
        log.error("job %s refused: %s", job, reason, exc_info=exc)
        self.failures[job] = reason
        self.results.setdefault(job, False)
        if self._group is not None:
            self._side(self._publish_refusal(job, reason), f"refuse-{job}")
        self._job_done.set()

    def _side(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """A publish beside the jobs (refusals, republishing, clearing retained data); the
        service waits for them before it exits."""
        assert self._group is not None
        try:
            task = self._group.create_task(work, name=name)
        except RuntimeError:  # the group is shutting down (a session came up as it ended)
            work.close()
            return
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _publish_refusal(self, job: str, reason: str) -> None:
        # The retained status of a job running here or elsewhere belongs to that run:
        # then only the event says this submission was refused.
        if job not in self.runners:
            with contextlib.suppress(JobClaimed, OSError):
                claim(self.runs_dir, job, holder_description(self.coordinator_id)).release()
                await self.publish(
                    self.topics.job_status(job), self._job_status(job, "failed", reason), 1, True
                )
        await self.publish(self.topics.job_events(job), refusal_event(job, reason), 1, False)

    def _job_status(self, job: str, state: str, reason: str | None = None) -> bytes:
        return job_status(job, state, self.runners.get(job), self.coordinator_id, reason)

    async def _run_job(self, runner: JobRunner) -> None:
        job = runner.job
        inner = asyncio.ensure_future(runner.run())
        self._job_tasks[job] = inner
        try:
            ok = await inner
            if ok and not job_succeeded(runner.flow.history):
                ok = False
                self.failures[job] = "no round succeeded"
            self.results[job] = ok
        except asyncio.CancelledError:
            if job not in self._cancelled or not inner.cancelled():
                # The service is stopping: the job's own task stops with it, and the session
                # publishes the "stopped" state.
                inner.cancel()
                await asyncio.wait([inner], timeout=FINAL_PUBLISH_S)  # bounded: shutdown ends
                raise
            self.results[job] = False
            job_log.info("job %s cancelled after round %d", job, runner.flow.completed_rounds)
            await self.publish(
                self.topics.job_status(job),
                self._job_status(job, "cancelled", "cancelled by an operator"),
                1,
                True,
            )
        except Exception as exc:  # a job's crash ends that job, never the service
            reason = f"{type(exc).__name__}: {exc}"
            log.error("job %s failed: %s", job, reason, exc_info=exc)
            self.results[job] = False
            self.failures[job] = reason
            await self._record_failure(runner, reason)
        finally:
            self._job_tasks.pop(job, None)
            if not cancelling():
                self.runners.pop(job, None)
                claimed = self._claims.pop(job, None)
                if claimed is not None:
                    claimed.release()
            # Agents still busy with its tasks (stragglers; a cancelled round's agents) stay
            # held until they answer (in _dispatch) or their deadline passes.
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

    async def _record_failure(self, runner: JobRunner, reason: str) -> None:
        """JOB_FAILED in the run's event log and on the bus, and the failed status."""
        event = await failure_event(runner, reason)
        await self.publish(self.topics.job_events(runner.job), encode_json(event), 1, False)
        failed = self._job_status(runner.job, "failed", reason)
        await self.publish(self.topics.job_status(runner.job), failed, 1, True)

    async def _control(self, request: JobControl) -> None:
        """``coordinator jobs cancel|logs``: act, and answer the asking client."""
        task = self._job_tasks.get(request.job) if request.action == "cancel" else None
        if task is not None:
            self._cancelled.add(request.job)
            task.cancel()
        reply = await answer(request, self.runs_dir, running=task is not None)
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
                housekeeping = group.create_task(self._housekeeping(), name="housekeeping")
                self._start_pending()
                if exit_when_idle:
                    while self.runners or self._pending:
                        self._job_done.clear()
                        await self._job_done.wait()
                    await self._final_publishes()
                    housekeeping.cancel()
                    connection.cancel()
        except BaseException:  # cancelled, interrupted, or a task of the group crashed
            if not self._shutdown_published:
                # No session said so (it was not up, or it ended another way): say so on a
                # connection of its own, so no job stays "running" for ever.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._publish_shutdown_apart(), 2 * FINAL_PUBLISH_S)
            raise
        finally:
            self._group = None
            for held in self._claims.values():
                held.release()
            self._claims.clear()
        return self.results

    async def _final_publishes(self) -> None:  # refusals of jobs that never started
        if self._side_tasks:
            await asyncio.wait(self._side_tasks, timeout=FINAL_PUBLISH_S)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            now = time.monotonic()
            for runner in list(self.runners.values()):
                runner.replies.expire_chunks(now)
            counts = dict(self.rejections.counts)
            if counts != self._status_counts and self._link.client is not None:
                self._status_counts = counts
                await self._publish_status()

    async def _connection(self) -> None:
        where = f"coordinator {self.coordinator_id} at {self.broker.host}:{self.broker.port}"
        await bus.run_with_reconnect(self._session, where, self._link.down)

    async def _session(self) -> None:
        status_topic = self.topics.coordinator_status(self.coordinator_id)
        client = bus.make_client(
            self.broker,
            self.coordinator_id,
            will_topic=status_topic,
            will_payload=self._status("offline", orphaned=True),
        )
        async with client:
            await client.subscribe(self.topics.all_agent_status(), qos=1)
            # Retain-as-published: a live update or result with the retain flag set is seen
            # as retained, and cleared (see _clear_retained).
            agent_data = bus.SubscribeOptions(qos=1, retainAsPublished=True)
            await client.subscribe(self.topics.all_job_updates(), options=agent_data)
            await client.subscribe(self.topics.all_job_results(), options=agent_data)
            if self._on_telemetry is not None:  # the telemetry recorder rides this connection
                await client.subscribe(self.topics.all_agent_telemetry(), qos=0)
                await client.subscribe(self.topics.all_job_status(), qos=1)
            if self.accept_submissions:
                await client.subscribe(self.topics.job_submit(), qos=1)
                await client.subscribe(self.topics.job_control(), qos=1)
            await client.publish(status_topic, self._status("online"), qos=1, retain=True)
            self._link.up(client)
            if self._group is not None:
                for runner in list(self.runners.values()):
                    self._side(runner.republish(), f"republish-{runner.job}")
            try:
                async for message in bus.messages(client):
                    self._route(message)
            except asyncio.CancelledError:
                with contextlib.suppress(bus.MqttError, TimeoutError):
                    await asyncio.wait_for(self._publish_shutdown(client), FINAL_PUBLISH_S)
                raise
            finally:
                self._link.down(client)

    async def _publish_shutdown_apart(self) -> None:
        async with bus.make_client(self.broker, self.coordinator_id) as client:
            await self._publish_shutdown(client)

    async def _publish_shutdown(self, client: bus.Client) -> None:
        """On a clean shutdown: every job still running is "stopped" (it resumes on restart)."""
        finals = [
            (self.topics.job_status(job), self._job_status(job, "stopped", "coordinator shut down"))
            for job in list(self.runners)
        ]
        finals.append(
            (self.topics.coordinator_status(self.coordinator_id), self._status("offline"))
        )
        for topic, payload in finals:
            await client.publish(topic, payload, qos=1, retain=True)
        self._shutdown_published = True

    def _route(self, message: bus.Message) -> None:
        """Handle one message in isolation: whatever it holds, the service keeps running."""
        topic = str(message.topic)
        try:
            if message.retain and message.payload:
                self._clear_retained(topic)
            self._dispatch(topic, message.payload)
        except Exception as exc:
            self.rejections.record(topic, exc, time.monotonic())

    def _clear_retained(self, topic: str) -> None:
        """Delete what an agent retained on its update or result topics (never retained by
        fedbus; the broker cannot refuse the flag per topic, so an agent could fill its
        retained store: finding 5 of #16), for any job, running here or not."""
        kind = self.topics.parse(topic).kind
        if kind not in (TopicKind.JOB_UPDATE, TopicKind.JOB_RESULT) or self._group is None:
            return
        self.retained_cleared += 1
        self._side(self._publish_empty_retained(topic), f"clear-{topic}")

    async def _publish_empty_retained(self, topic: str) -> None:
        with contextlib.suppress(bus.MqttError):
            await self.publish(topic, b"", 1, True)

    def _dispatch(self, topic: str, payload: object) -> None:
        parsed = self.topics.parse(topic)
        if not isinstance(payload, bytes | bytearray):
            raise InvalidMessage("malformed", "payload is not bytes")
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
                item = Inbound(kind, parsed.agent or "", payload, time.monotonic())
                if isinstance(runner.inbox, BoundedInbox):
                    runner.inbox.offer(item)
                else:
                    runner.inbox.put_nowait(item)
            case TopicKind.AGENT_TELEMETRY | TopicKind.JOB_STATUS if self._on_telemetry:
                self._on_telemetry(topic, payload)
            case TopicKind.JOB_SUBMIT:
                self._submission(payload)
            case TopicKind.JOB_CONTROL:
                request = decode_json(JobControl, payload)
                check_id(request.job, "job id")
                if request.reply_to is not None:
                    check_id(request.reply_to, "client id")
                if self._group is not None:
                    self._side(self._control(request), "job-control")
            case _:
                pass

    def _submission(self, payload: bytes | bytearray) -> None:
        submission = decode_json(JobSubmission, payload)
        try:
            config = parse_job(submission.config, submission.source)
        except JobConfigError as exc:
            name = submission.config.get("name")
            if isinstance(name, str) and is_id(name):
                self._refuse(name, str(exc))
            raise
        self.submit(config, new_run=submission.new_run)

    def _agent_status(self, agent: str, payload: bytes) -> None:
        status = decode_json(AgentStatus, payload)
        if status.agent != agent:
            raise InvalidMessage("forged", f"status on {agent!r}'s topic names {status.agent!r}")
        change = self.registry.apply(status, time.time())
        if change is Change.WENT_OFFLINE:
            for runner in self.runners.values():
                runner.inbox.put_nowait(Inbound("lost", agent))
        elif change is Change.CAME_ONLINE:
            # A runner waiting for agents counts again now, not at its next poll.
            for runner in self.runners.values():
                runner.inbox.put_nowait(Inbound("joined", agent))
