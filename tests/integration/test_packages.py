"""Compute packages end to end on a real mosquitto: agents without the code run a job.

The wine package (packages/wine) is not importable in this process; the coordinator
publishes it pinned by SHA-256, four agents with their own package caches fetch, verify
and unpack it, train with it and report its custom metric. A second job with the same
package transfers nothing; bytes that do not match the pin, and a hash the agent does not
trust, are refused with the reason reaching the coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from coordinator.config import load_job
from coordinator.events import read_events
from coordinator.packages import build_command
from coordinator.service import CoordinatorService
from edge_agent.agent import AgentIdentity, EdgeAgent
from edge_agent.model_store import ModelStore
from edge_agent.packages import AgentPackages, PackageTrust
from edge_agent.trainer import LocalTrainer
from fedbus.packages.cache import PackageCache
from fedbus.protocol import bus
from fedbus.protocol.messages import AgentProfile

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_path() -> object:
    """Undo what activating a package did to this process's import state."""
    before = list(sys.path)
    yield
    sys.path[:] = before
    sys.modules.pop("wine_mlp", None)


@contextlib.asynccontextmanager
async def package_agents(
    settings: bus.BrokerSettings, caches: list[Path], trust: PackageTrust
) -> AsyncIterator[list[EdgeAgent]]:
    trainer, models, lock = LocalTrainer("cpu"), ModelStore(), asyncio.Lock()
    agents = [
        EdgeAgent(
            AgentIdentity(f"agent-{i}", i, AgentProfile(partition=i)),
            settings,
            trainer,
            models,
            compute_lock=lock,
            packages=AgentPackages(PackageCache(cache), trust, fetch_timeout=30),
        )
        for i, cache in enumerate(caches)
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


def write_job(tmp: Path, name: str, **extra: object) -> Path:
    job = {
        "name": name,
        "package": "wine-mlp.tar.gz",
        "data_args": {"num_partitions": 4, "seed": 0},
        "rounds": 4,
        "num_participants": 4,
        "overcommitment": 1.0,
        "min_agents": 4,
        "agent_wait_timeout": 60,
        "round_timeout": 60,
        "eval_timeout": 60,
        "local_steps": 10,
        "batch_size": 16,
        "learning_rate": 0.05,
        **extra,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


async def run_job(settings: bus.BrokerSettings, job: Path, runs: Path) -> bool:
    service = CoordinatorService(settings, runs_dir=runs, coordinator_id=f"c-{job.stem}")
    service.submit(load_job(job))
    async with asyncio.timeout(240):
        results = await service.serve(exit_when_idle=True)
    return results[job.stem]


async def test_package_runs_on_four_agents_without_its_code(
    settings: bus.BrokerSettings, tmp_path: Path, clean_path: object
) -> None:
    # Prepare: the package is built, and its code is importable nowhere here.
    _, sha, size = build_command(str(REPO / "packages" / "wine"), str(tmp_path / "wine-mlp.tar.gz"))
    assert importlib.util.find_spec("wine_mlp") is None
    caches = [tmp_path / f"cache-{i}" for i in range(4)]
    first = write_job(tmp_path, "wine1")
    second = write_job(tmp_path, "wine2", seed=1)

    # Execute: two jobs with the same package on the same four agents.
    async with package_agents(settings, caches, PackageTrust(frozenset({sha}))) as agents:
        assert await run_job(settings, first, tmp_path / "runs")
        after_first = [(a.packages.stats.fetched, a.packages.stats.fetched_bytes) for a in agents]  # type: ignore[union-attr]
        assert await run_job(settings, second, tmp_path / "runs")
        after_second = [a.packages.stats.fetched for a in agents]  # type: ignore[union-attr]

    # Assert: one verified transfer per agent, none for the second job; custom metrics kept.
    assert after_first == [(1, size)] * 4
    assert after_second == [1] * 4
    for cache in caches:
        assert (cache / sha / "fedbus.yaml").is_file()
    for name in ("wine1", "wine2"):
        events = read_events(tmp_path / "runs" / name / "events.jsonl")
        ends = [e["data"] for e in events if e["event"] == "ROUND_END"]
        assert len(ends) == 4 and all(len(d["kept"]) == 4 for d in ends)
        assert ends[-1]["accuracy"] > 0.8
        by_agent = ends[-1]["metrics_by_agent"]
        assert sorted(by_agent) == [f"agent-{i}" for i in range(4)]
        assert all(0.0 <= m["macro_f1"] <= 1.0 for m in by_agent.values())
        summary = ends[-1]["metrics"]["macro_f1"]
        assert summary["min"] <= summary["median"] <= summary["max"]
        assert summary["agents"] == 4

    # A restarted agent with the same cache finds the package there: still no transfer.
    again = AgentPackages(PackageCache(caches[0]), PackageTrust(frozenset({sha})))
    loaded = await again.ensure(sha, bus.Link(), None)  # type: ignore[arg-type]
    assert loaded.spec.name == "wine-mlp"
    assert (again.stats.fetched, again.stats.cache_hits) == (0, 1)
