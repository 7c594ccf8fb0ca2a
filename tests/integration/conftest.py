"""Integration fixtures: a real mosquitto per test on a free loopback port, unique prefixes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.broker_process import BrokerProcess
from coordinator.config import JobConfig, parse_job
from edge_agent.agent import AgentIdentity, EdgeAgent
from edge_agent.model_store import ModelStore
from edge_agent.trainer import LocalTrainer
from fedbus.protocol import bus, paho_speedups
from fedbus.protocol.entry_points import DEFAULT_TRUSTED
from fedbus.protocol.messages import AgentProfile

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess.create(tmp_path / "broker")
    process.start()
    try:
        yield process
    finally:
        process.stop()


# The paho speed-ups every client of the suite uses, as every fedbus command reads them:
# FEDBUS_PAHO_SPEEDUPS=off runs the whole suite on stock paho/aiomqtt (.ci/run does).
SPEEDUPS = paho_speedups.parse_speedups(os.environ.get(paho_speedups.ENV_VAR, "on"))


@pytest.fixture
def settings(broker: BrokerProcess) -> bus.BrokerSettings:
    return bus.BrokerSettings(
        port=broker.port, prefix=f"t{uuid.uuid4().hex[:8]}", keepalive=5, speedups=SPEEDUPS
    )


async def wait_until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    """Return once ``condition()`` holds; TimeoutError after ``seconds``."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


async def receive(client: bus.Client, count: int, seconds: float = 60.0) -> list[bytes]:
    """The payloads of the next ``count`` messages ``client`` receives (fewer on timeout)."""
    got: list[bytes] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                got.append(bytes(message.payload))  # type: ignore[arg-type]
                if len(got) == count:
                    break
    return got


def count_tasks(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Names of the coroutines that become tasks on ``loop`` from now on."""
    made: list[str] = []
    factory = loop.get_task_factory()

    def counting(loop_: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> object:
        made.append(getattr(coro, "__qualname__", repr(coro)))
        if factory is not None:
            return factory(loop_, coro, **kwargs)  # type: ignore[arg-type]
        return asyncio.Task(coro, loop=loop_, **kwargs)  # type: ignore[arg-type]

    loop.set_task_factory(counting)  # type: ignore[arg-type]
    return made


def job_config(**overrides: Any) -> JobConfig:
    base: dict[str, Any] = {
        "name": "itest",
        "model": "fedbus.examples.digits:make_model",
        "data": "fedbus.examples.digits:load_partition",
        "data_args": {"num_partitions": 4, "alpha": 0.5, "seed": 0},
        "rounds": 3,
        "num_participants": 3,
        "overcommitment": 1.0,
        "clients_required": 1,
        "min_agents": 4,
        "agent_wait_timeout": 30,
        "round_timeout": 30,
        "eval_timeout": 20,
        "local_steps": 20,
        "batch_size": 16,
        "eval_interval": 1,
    }
    return parse_job({**base, **overrides}, "<test>")


@contextlib.asynccontextmanager
async def running_agents(
    settings: bus.BrokerSettings, count: int, *, first: int = 0, trainer: LocalTrainer | None = None
) -> AsyncIterator[list[EdgeAgent]]:
    """``count`` real agents (own MQTT connections) in this event loop, one shared torch runtime."""
    # The shipped examples and this suite's own models (tests.integration.big_model).
    trainer = trainer or LocalTrainer("cpu", trusted=(*DEFAULT_TRUSTED, "tests.integration"))
    models = ModelStore()
    lock = asyncio.Lock()
    agents = [
        EdgeAgent(
            AgentIdentity(f"agent-{i}", i, AgentProfile(partition=i)),
            settings,
            trainer,
            models,
            compute_lock=lock,
        )
        for i in range(first, first + count)
    ]
    tasks = [asyncio.create_task(a.run(), name=a.agent_id) for a in agents]
    try:
        async with asyncio.timeout(20):
            await asyncio.gather(*(a.connected.wait() for a in agents))
        yield agents
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def spawn_agent(
    settings: bus.BrokerSettings, agent_id: str, partition: int, log: Path
) -> subprocess.Popen[bytes]:
    """A real agent process, for tests that kill it."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "run",
            "--id",
            agent_id,
            "--partition",
            str(partition),
            "--broker",
            f"{settings.host}:{settings.port}",
            "--prefix",
            settings.prefix,
            "--threads",
            "1",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def spawn_coordinator(
    settings: bus.BrokerSettings,
    job_file: Path,
    runs_dir: Path,
    log: Path,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "run",
            str(job_file),
            "--broker",
            f"{settings.host}:{settings.port}",
            "--prefix",
            settings.prefix,
            "--runs-dir",
            str(runs_dir),
            "--quiet",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
