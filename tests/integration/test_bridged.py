"""Four site brokers bridged to a core (deploy/mosquitto/bridge.conf), real mosquitto processes.

The coordinator connects to the core, each agent to its site's broker. A job across the
bridges ends with the model the same job makes on one broker, and a site broker restarted
in the middle of a job costs no round: the bridge queues what crosses while the site is
down, and its agents come back with their sessions.

A clean mosquitto shutdown publishes the last will of every client still connected (with
or without a will delay; checked on 2.0.11), so the core hears "offline" for the site's
agents and the round in flight goes on without them (AGENT_LOST), as it would for any
agent that drops: that round keeps the others' updates, and the agents are back online
(through the restarted site and its bridge) once they have reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator import checkpoint
from coordinator.bridged_brokers import BridgedBrokers
from coordinator.broker_process import BrokerProcess
from coordinator.events import read_events
from coordinator.job_runner import JobRunner
from coordinator.service import CoordinatorService
from edge_agent.agent import AgentIdentity, EdgeAgent
from edge_agent.model_store import ModelStore
from edge_agent.trainer import LocalTrainer
from fedbus.protocol import bus
from fedbus.protocol.messages import AgentProfile, AgentStatus, Event, decode_json
from fedbus.protocol.topics import Topics

from .conftest import job_config

SITES = 4
ROUNDS = 4


@pytest.fixture(params=["push", "core-pulls"])
def bridged(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BridgedBrokers]:
    """Both layouts of docs/scale-out.md: sites push up their bridge, or the core pulls."""
    brokers = BridgedBrokers.create(
        tmp_path / "brokers",
        SITES,
        prefix=f"t{uuid.uuid4().hex[:8]}",
        core_pulls=request.param == "core-pulls",
    )
    try:
        brokers.start()
        yield brokers
    finally:
        brokers.stop()


@contextlib.asynccontextmanager
async def agents_on(sites: list[bus.BrokerSettings]) -> AsyncIterator[list[EdgeAgent]]:
    """Agent i on ``sites[i]``: real agents, own MQTT connections, one torch runtime."""
    trainer, models, lock = LocalTrainer("cpu"), ModelStore(), asyncio.Lock()
    agents = [
        EdgeAgent(
            AgentIdentity(f"agent-{i}", i, AgentProfile(partition=i)),
            settings,
            trainer,
            models,
            compute_lock=lock,
        )
        for i, settings in enumerate(sites)
    ]
    tasks = [asyncio.create_task(a.run(), name=a.agent_id) for a in agents]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(a.connected.wait() for a in agents))
        yield agents
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_job(
    coordinator: bus.BrokerSettings,
    sites: list[bus.BrokerSettings],
    runs: Path,
    on_event: Any = None,
    while_agents_run: Callable[[], Awaitable[None]] | None = None,
    clients_required: int = 4,  # by default a round that lost one update fails, not shrinks
) -> list[dict[str, Any]]:
    config = job_config(
        rounds=ROUNDS,
        num_participants=4,  # every agent trains and every update is kept: runs comparable
        overcommitment=1.0,
        clients_required=clients_required,
        round_timeout=60,
        selector={"name": "random", "seed": 5},
    )

    def attach(runner: JobRunner) -> None:
        if on_event is not None:
            runner.events.listeners.append(on_event)

    service = CoordinatorService(coordinator, runs_dir=runs, on_runner=attach)
    service.submit(config)
    async with agents_on(sites), asyncio.timeout(180):
        assert await service.serve(exit_when_idle=True) == {"itest": True}
        if while_agents_run is not None:
            await while_agents_run()
    return read_events(runs / "itest" / "events.jsonl")


def final_weights(run_dir: Path) -> dict[str, np.ndarray]:
    restored = checkpoint.load(run_dir / "checkpoint")
    assert restored is not None
    return restored[1]


async def online_on_core(bridged: BridgedBrokers, agent: str) -> bool:
    """Whether ``agent``'s retained status on the core says online within 30 s."""
    topic = Topics(bridged.prefix).agent_status(agent)
    client = bus.make_client(bridged.core_settings(), "test-watch", persistent=False)
    async with client:
        await client.subscribe(topic, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                async for message in client.messages:
                    status = decode_json(AgentStatus, bytes(message.payload))  # type: ignore[arg-type]
                    if status.state == "online":
                        return True
    return False


def kept_per_round(events: list[dict[str, Any]]) -> list[int]:
    """Updates kept by each round; asserts that every round ended and none failed."""
    ends = [e for e in events if e["event"] == "ROUND_END"]
    assert [e["round"] for e in ends] == list(range(1, ROUNDS + 1))
    assert not [e for e in events if e["event"] == "ROUND_FAILED"]
    return [len(e["data"]["kept"]) for e in ends]


async def test_a_job_across_four_bridged_sites_makes_the_single_broker_model(
    bridged: BridgedBrokers, tmp_path: Path
) -> None:
    # Prepare: the same job on one broker of its own.
    single = BrokerProcess.create(tmp_path / "single")
    single.start()
    try:
        alone = bus.BrokerSettings(port=single.port, prefix=bridged.prefix, keepalive=5)
        # Execute: on one broker, then with each agent on its own site broker.
        one_broker = await run_job(alone, [alone] * SITES, tmp_path / "single-runs")
    finally:
        single.stop()
    across = await run_job(
        bridged.core_settings(keepalive=5),
        [bridged.site_settings(i, keepalive=5) for i in range(SITES)],
        tmp_path / "bridged-runs",
    )
    # Assert: every round kept all four updates, both ways, and the models are bit-identical.
    assert kept_per_round(one_broker) == kept_per_round(across) == [4] * ROUNDS
    a = final_weights(tmp_path / "single-runs" / "itest")
    b = final_weights(tmp_path / "bridged-runs" / "itest")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


async def test_a_site_broker_restart_mid_job_loses_no_round(
    bridged: BridgedBrokers, tmp_path: Path
) -> None:
    # Prepare: restart site 1 (agent-1's broker) as round 2 begins, while its tasks go out.
    restarts: list[asyncio.Task[None]] = []

    def on_event(event: Event) -> None:
        if event.event == "ROUND_BEGIN" and event.round == 2 and not restarts:
            restarts.append(asyncio.create_task(asyncio.to_thread(bridged.restart_site, 1)))

    back_online: list[bool] = []

    async def check_agent_1() -> None:
        back_online.append(await online_on_core(bridged, "agent-1"))

    # Execute: a round needs 3 of its 4 updates, as with overcommitment on a real site.
    events = await run_job(
        bridged.core_settings(keepalive=5),
        [bridged.site_settings(i, keepalive=5) for i in range(SITES)],
        tmp_path / "runs",
        on_event=on_event,
        while_agents_run=check_agent_1,
        clients_required=3,
    )
    # Assert: the restart happened; every round ended (none failed) with at most agent-1
    # missing; and agent-1, reconnected to its site, is online on the core again.
    assert len(restarts) == 1
    await restarts[0]
    assert kept_per_round(events)[0] == 4
    assert all(k >= 3 for k in kept_per_round(events))
    lost = [e for e in events if e["event"] == "AGENT_LOST"]
    assert {e["data"]["agent"] for e in lost} <= {"agent-1"}
    assert back_online == [True]
