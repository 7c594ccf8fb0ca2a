"""A Flower client runs unchanged on fedbus agents and learns what it learns under Flower.

The quickstart-shaped client (flower_quickstart.py, no fedbus imports) runs ten FedAvg
rounds twice from the same initial parameters and seeds: under Flower's simulation engine
(a child process) and on four fedbus agents over a real mosquitto. The final federated
accuracies agree within 0.01.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

pytest.importorskip(
    "flwr", reason="flwr is the optional 'flower' extra; the test extras install it"
)

from coordinator import seed_model
from coordinator.config import load_job
from coordinator.events import read_events
from coordinator.service import CoordinatorService
from edge_agent.agent import AgentIdentity, EdgeAgent
from edge_agent.flower import FlowerClientRunner, initial_parameters
from edge_agent.model_store import ModelStore
from edge_agent.packages import PackageTrust
from edge_agent.trainer import LocalTrainer
from fedbus.protocol import bus
from fedbus.protocol.messages import AgentProfile

from .conftest import REPO, job_config
from .flower_simulation import FIT_CONFIG
from .test_packages import package_agents

ROUNDS = 10
CLIENT = "tests.integration.flower_quickstart:client_fn"


@contextlib.asynccontextmanager
async def flower_agents(settings: bus.BrokerSettings, client_fn: str) -> AsyncIterator[None]:
    runners = [FlowerClientRunner(client_fn, num_partitions=4) for _ in range(4)]
    agents = [
        EdgeAgent(
            AgentIdentity(f"agent-{i}", i, AgentProfile(partition=i)),
            settings,
            LocalTrainer("cpu"),
            ModelStore(),
            train_fn=runner.train,
            validate_fn=runner.validate,
        )
        for i, runner in enumerate(runners)
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


async def run_on_fedbus(
    settings: bus.BrokerSettings, seed: Path, runs: Path, client_fn: str, name: str
) -> list[dict]:
    config = job_config(
        name=name,
        model=client_fn,
        data=client_fn,
        data_args={},
        initial_model=str(seed),
        rounds=ROUNDS,
        num_participants=4,
        overcommitment=1.0,
        min_agents=4,
        round_timeout=60,
        eval_timeout=60,
        eval_interval=1,
        **FIT_CONFIG,
    )
    service = CoordinatorService(settings, runs_dir=runs, coordinator_id=f"c-{name}")
    service.submit(config)
    async with flower_agents(settings, client_fn), asyncio.timeout(240):
        results = await service.serve(exit_when_idle=True)
    assert results == {name: True}
    return read_events(runs / name / "events.jsonl")


async def test_flower_client_matches_flower_simulation(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: one seed file, the client's own initial parameters, for both frameworks.
    seed = tmp_path / "seed.npz"
    seed_model.save(seed, initial_parameters(CLIENT, partition=0, num_partitions=4))

    # Execute: Flower's simulation engine in a child process, then fedbus.
    flower = subprocess.run(
        [sys.executable, "-m", "tests.integration.flower_simulation", str(ROUNDS), str(seed)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert flower.returncode == 0, flower.stderr[-3000:]
    line = next(x for x in flower.stdout.splitlines() if x.startswith("ACCURACIES "))
    flower_acc = json.loads(line.removeprefix("ACCURACIES "))
    events = await run_on_fedbus(settings, seed, tmp_path / "runs", CLIENT, "flower")

    # Assert: same final accuracy within 0.01; the client's own metrics were kept.
    assert len(flower_acc) == ROUNDS and flower_acc[-1] > 0.8, flower_acc
    (end,) = [e for e in events if e["event"] == "JOB_END"]
    print(f"final accuracy: flower {flower_acc[-1]:.4f}  fedbus {end['data']['accuracy']:.4f}")
    assert abs(end["data"]["accuracy"] - flower_acc[-1]) <= 0.01, (end["data"], flower_acc)
    rounds = [e["data"] for e in events if e["event"] == "ROUND_END"]
    assert len(rounds) == ROUNDS and all(len(d["kept"]) == 4 for d in rounds)
    assert set(rounds[-1]["train_metrics_by_agent"]["agent-0"]) == {"train_loss"}
    assert set(rounds[-1]["metrics_by_agent"]) == {f"agent-{i}" for i in range(4)}


async def test_numpy_client_form_runs_unchanged(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # The NumPyClient itself (not wrapped in a Client) goes through the same adapter.
    client = "tests.integration.flower_quickstart:numpy_client_fn"
    seed = tmp_path / "seed.npz"
    seed_model.save(seed, initial_parameters(client, partition=0, num_partitions=4))
    events = await run_on_fedbus(settings, seed, tmp_path / "runs", client, "flower-np")
    (end,) = [e for e in events if e["event"] == "JOB_END"]
    assert end["data"]["accuracy"] > 0.8


async def test_flower_client_as_a_compute_package(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: the same client file, shipped as a package (fedbus.yaml: flower_client).
    package = tmp_path / "pkg"
    package.mkdir()
    source = (REPO / "tests" / "integration" / "flower_quickstart.py").read_text()
    (package / "flower_pkg_client.py").write_text(source)
    (package / "fedbus.yaml").write_text(
        "name: flower-digits\nflower_client: flower_pkg_client:client_fn\n"
    )
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "name": "flower-pkg",
                "package": "pkg",
                "data_args": {"num_partitions": 4},
                "rounds": 5,
                "num_participants": 4,
                "overcommitment": 1.0,
                "min_agents": 4,
                **FIT_CONFIG,
            }
        )
    )
    config = load_job(job)
    caches = [tmp_path / f"cache-{i}" for i in range(4)]
    service = CoordinatorService(settings, runs_dir=tmp_path / "runs", coordinator_id="c-pkg")
    service.submit(config)

    # Execute
    try:
        trust = PackageTrust(frozenset({str(config.package_sha256)}))
        async with package_agents(settings, caches, trust) as agents, asyncio.timeout(240):
            results = await service.serve(exit_when_idle=True)
    finally:
        sys.modules.pop("flower_pkg_client", None)

    # Assert: fetched once per agent, fit/evaluate ran from the package, and it learned.
    assert results == {"flower-pkg": True}
    assert [a.packages.stats.fetched for a in agents] == [1] * 4  # type: ignore[union-attr]
    events = read_events(tmp_path / "runs" / "flower-pkg" / "events.jsonl")
    (end,) = [e for e in events if e["event"] == "JOB_END"]
    assert end["data"]["accuracy"] > 0.6
    rounds = [e["data"] for e in events if e["event"] == "ROUND_END"]
    assert "train_loss" in rounds[-1]["train_metrics"]
