"""Several jobs on one pool in `coordinator serve`, on a real broker with real agents.

Every task the coordinator publishes is checked as it leaves: the job that sends it holds
the agent (no other job does), and the agent meets the job's ``requires:``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from coordinator.eligibility import attributes_of, why_not
from coordinator.events import read_events
from coordinator.service import CoordinatorService
from edge_agent.agent import AgentIdentity, EdgeAgent
from edge_agent.model_store import ModelStore
from edge_agent.trainer import LocalTrainer
from fedbus.protocol import bus
from fedbus.protocol.messages import (
    AgentProfile,
    ControlReply,
    CoordinatorStatus,
    JobControl,
    ResultMeta,
    Task,
    UpdateMeta,
    decode_envelope,
    decode_json,
    encode_json,
)
from fedbus.protocol.topics import TopicKind, Topics

from .conftest import job_config

TAGGED = {"agent-0", "agent-1", "agent-2"}


@contextlib.asynccontextmanager
async def tagged_agents(settings: bus.BrokerSettings, count: int) -> AsyncIterator[None]:
    """Real agents; the first three carry the operator's tag ``lab-a``."""
    trainer, models, lock = LocalTrainer("cpu"), ModelStore(), asyncio.Lock()
    agents = [
        EdgeAgent(
            AgentIdentity(
                f"agent-{i}",
                i,
                AgentProfile(partition=i, tags=["lab-a"] if f"agent-{i}" in TAGGED else []),
            ),
            settings,
            trainer,
            models,
            compute_lock=lock,
        )
        for i in range(count)
    ]
    tasks = [asyncio.create_task(a.run(), name=a.agent_id) for a in agents]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(a.connected.wait() for a in agents))
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def watch_tasks(
    service: CoordinatorService, seen: list[tuple[str, Task]], violations: list[str]
) -> None:
    """Check every task at the moment the coordinator publishes it."""
    publish: Callable = service.publish
    topics = Topics(service.broker.prefix)

    def checked(topic: str, payload: bytes | bytearray, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        parsed = topics.parse(topic)
        if parsed.kind is TopicKind.AGENT_TASKS:
            task, _ = decode_envelope(Task, payload)
            agent = parsed.agent or ""
            seen.append((agent, task))
            holders = service.leases.holder_of(agent)
            if holders != {task.job}:
                violations.append(f"{task.kind} of {task.job} to {agent} held by {holders}")
            requires = service.runners[task.job].config.requires
            reason = why_not(requires, attributes_of(agent, service.registry.profile(agent)))
            if reason is not None:
                violations.append(f"{task.job} asked ineligible {agent}: {reason}")
        return publish(topic, payload, *args, **kwargs)

    service.publish = checked  # type: ignore[method-assign]


class AgentSideLog:
    """Every task and answer on the bus, in the broker's order: what each agent holds.

    An agent holds a task from when it is sent until it answers it (the update, or the
    result of a validation); a task of one job sent to an agent that still holds a task of
    another job is a violation.
    """

    def __init__(self, settings: bus.BrokerSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.prefix)
        self.open: dict[str, dict[str, str]] = {}  # agent -> task id -> job
        self.violations: list[str] = []
        self.tasks = 0
        self.ready = asyncio.Event()

    async def run(self) -> None:
        client = bus.make_client(self.settings, "agent-side-log", persistent=False)
        async with client:
            for topic in ("agents/+/tasks", "jobs/+/updates/+", "jobs/+/results/+"):
                await client.subscribe(f"{self.settings.prefix}/{topic}", qos=1)
            self.ready.set()
            async for message in client.messages:
                self.see(str(message.topic), bytes(message.payload))  # type: ignore[arg-type]

    def see(self, topic: str, payload: bytes) -> None:
        parsed = self.topics.parse(topic)
        agent = parsed.agent or ""
        held = self.open.setdefault(agent, {})
        if parsed.kind is TopicKind.AGENT_TASKS:
            task, _ = decode_envelope(Task, payload)
            self.tasks += 1
            others = {job for job in held.values() if job != task.job}
            if others:
                self.violations.append(f"{agent} got {task.job}'s task holding {others}'")
            held[task.task_id] = task.job
            if task.validate_first is not None:
                held[task.validate_first.task_id] = task.job
        elif parsed.kind is TopicKind.JOB_UPDATE:
            update, _ = decode_envelope(UpdateMeta, payload)
            held.pop(update.task_id, None)
            if update.validation is not None:
                held.pop(update.validation.task_id, None)
        elif parsed.kind is TopicKind.JOB_RESULT:
            held.pop(decode_envelope(ResultMeta, payload)[0].task_id, None)


async def coordinator_status(
    settings: bus.BrokerSettings, until: Callable[[CoordinatorStatus], bool]
) -> CoordinatorStatus:
    """The coordinator's status once it satisfies ``until`` (retained, then updates)."""
    client = bus.make_client(settings, "status-reader", persistent=False)
    async with client:
        await client.subscribe(Topics(settings.prefix).coordinator_status(), qos=1)
        async with asyncio.timeout(30):
            async for message in client.messages:
                status = decode_json(CoordinatorStatus, bytes(message.payload))  # type: ignore[arg-type]
                if until(status):
                    return status
    raise AssertionError("no coordinator status")


async def control(settings: bus.BrokerSettings, request: JobControl) -> ControlReply:
    topics = Topics(settings.prefix)
    client = bus.make_client(settings, request.reply_to or "ctl", persistent=False)
    async with client:
        await client.subscribe(topics.control_reply(request.reply_to or "ctl"), qos=1)
        await client.publish(topics.job_control(), encode_json(request), qos=1)
        async with asyncio.timeout(20):
            async for message in client.messages:
                return decode_json(ControlReply, bytes(message.payload))  # type: ignore[arg-type]
    raise AssertionError("no reply")


async def test_jobs_share_the_pool_without_sharing_an_agent_and_respect_requirements(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: five agents, three tagged; a tagged-only job, an any-agent job that asks
    # three agents a round and keeps the first two (the third straggles on), and a job no
    # agent can run.
    five = {"data_args": {"num_partitions": 5, "alpha": 0.5, "seed": 0}}
    tagged = job_config(
        **five,
        name="tagged",
        rounds=3,
        num_participants=2,
        min_agents=2,
        requires={"tags": ["lab-a"]},
    )
    anyone = job_config(
        **five, name="anyone", rounds=4, num_participants=2, overcommitment=1.5, min_agents=3
    )
    impossible = job_config(
        name="impossible",
        rounds=1,
        num_participants=1,
        min_agents=1,
        requires={"accelerator": "cuda"},
    )
    service = CoordinatorService(settings, runs_dir=tmp_path, policy="fifo")
    seen: list[tuple[str, Task]] = []
    violations: list[str] = []
    watch_tasks(service, seen, violations)
    for config in (tagged, anyone, impossible):
        service.submit(config)
    agent_side = AgentSideLog(settings)
    logging = asyncio.create_task(agent_side.run())
    async with asyncio.timeout(20):
        await agent_side.ready.wait()
    async with tagged_agents(settings, 5):
        serving = asyncio.create_task(service.serve(exit_when_idle=True))
        try:
            # Execute: the two runnable jobs finish; the impossible one waits, visibly.
            async with asyncio.timeout(240):
                while not {"tagged", "anyone"} <= set(service.results):
                    await asyncio.wait({serving}, timeout=0.2)
                    assert not serving.done(), serving
            status = await coordinator_status(settings, lambda s: s.jobs == ["impossible"])
            reply = await control(
                settings, JobControl(action="logs", job="tagged", reply_to="op", tail=3)
            )
            cancel = await control(
                settings, JobControl(action="cancel", job="impossible", reply_to="op")
            )
            async with asyncio.timeout(30):
                results = await serving
            async with asyncio.timeout(30):  # the monitor has seen every task
                while agent_side.tasks < len(seen):
                    await asyncio.sleep(0.05)
        finally:
            serving.cancel()
            logging.cancel()
            await asyncio.gather(serving, logging, return_exceptions=True)
    # Assert: every task went to an agent its job held alone and that met its requirements,
    # and no agent was sent a task while it still worked on another job's, stragglers too.
    assert violations == []
    assert agent_side.violations == [] and agent_side.tasks == len(seen)
    rounds = [
        e for e in read_events(tmp_path / "anyone" / "events.jsonl") if e["event"] == "ROUND_END"
    ]
    assert any(e["data"]["stragglers"] for e in rounds)
    assert {t.job for _, t in seen} == {"tagged", "anyone"}
    assert {a for a, t in seen if t.job == "tagged"} <= TAGGED
    assert {t.kind for _, t in seen} == {"train", "validate"}
    assert results == {"tagged": True, "anyone": True, "impossible": False}
    assert status.jobs == ["impossible"] and status.policy == "fifo"
    assert status.waiting["impossible"].startswith(
        "requirements (accelerator in ['cuda']) met by 0 of 5 online agents"
    )
    assert reply.ok and len(reply.lines) == 3 and '"JOB_END"' in reply.lines[-1]
    assert cancel.ok and cancel.message == "job impossible cancelled"


async def test_a_straggler_gets_no_other_jobs_task_until_it_answers(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: three agents. Job "first" asks all three and keeps the first two updates;
    # the third trains on after each round closed, also after the job's last round. Job
    # "second" needs all three and waits behind it.
    three = {"data_args": {"num_partitions": 3, "alpha": 0.5, "seed": 0}}
    slow = {"local_steps": 2000, "eval_interval": 0}
    first = job_config(
        **three,
        **slow,
        name="first",
        rounds=2,
        num_participants=2,
        overcommitment=1.5,
        min_agents=3,
    )
    second = job_config(**three, name="second", rounds=2, num_participants=3, min_agents=3)
    service = CoordinatorService(settings, runs_dir=tmp_path, policy="fifo")
    seen: list[tuple[str, Task]] = []
    violations: list[str] = []
    watch_tasks(service, seen, violations)
    service.submit(first)
    service.submit(second)
    agent_side = AgentSideLog(settings)
    logging = asyncio.create_task(agent_side.run())
    try:
        async with asyncio.timeout(20):
            await agent_side.ready.wait()
        async with tagged_agents(settings, 3), asyncio.timeout(240):
            # Execute
            results = await service.serve(exit_when_idle=True)
            while agent_side.tasks < len(seen):
                await asyncio.sleep(0.05)
    finally:
        logging.cancel()
        await asyncio.gather(logging, return_exceptions=True)
    # Assert: both ran; there were stragglers; none was sent the other job's task early.
    assert results == {"first": True, "second": True}
    rounds = [
        e for e in read_events(tmp_path / "first" / "events.jsonl") if e["event"] == "ROUND_END"
    ]
    assert all(len(e["data"]["stragglers"]) == 1 for e in rounds)
    assert violations == [] and agent_side.violations == []
    assert agent_side.tasks == len(seen) > 0
