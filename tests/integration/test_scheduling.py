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
    Task,
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
    # Prepare: five agents, three tagged; a tagged-only job, an any-agent job that needs
    # three at a time, and a job no agent can run.
    five = {"data_args": {"num_partitions": 5, "alpha": 0.5, "seed": 0}}
    tagged = job_config(
        **five,
        name="tagged",
        rounds=3,
        num_participants=2,
        min_agents=2,
        requires={"tags": ["lab-a"]},
    )
    anyone = job_config(**five, name="anyone", rounds=3, num_participants=3, min_agents=3)
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
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
    # Assert: every task went to an agent its job held alone and that met its requirements.
    assert violations == []
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
