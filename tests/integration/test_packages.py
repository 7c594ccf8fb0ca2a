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
import dataclasses
import importlib.util
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from coordinator.cli import print_round
from coordinator.config import load_job
from coordinator.events import read_events
from coordinator.packages import build_command
from coordinator.service import CoordinatorService
from edge_agent.agent import AgentIdentity, EdgeAgent
from edge_agent.emulation import Emulator
from edge_agent.model_store import ModelStore
from edge_agent.packages import AgentPackages, PackageTrust
from edge_agent.trainer import LocalTrainer
from fedbus.fleet import load_fleet, save_fleet
from fedbus.fleet.builders import build_synthetic
from fedbus.packages.cache import PackageCache
from fedbus.protocol import bus
from fedbus.protocol.messages import (
    AgentProfile,
    Task,
    TrainConfig,
    UpdateMeta,
    decode_envelope,
    encode_envelope,
)
from fedbus.protocol.topics import Topics

from .conftest import receive

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
    settings: bus.BrokerSettings, caches: list[Path], trust: PackageTrust, first: int = 0
) -> AsyncIterator[list[EdgeAgent]]:
    trainer, models, lock = LocalTrainer("cpu"), ModelStore(), asyncio.Lock()
    agents = [
        EdgeAgent(
            AgentIdentity(f"agent-{first + i}", first + i, AgentProfile(partition=first + i)),
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


async def run_job(
    settings: bus.BrokerSettings, job: Path, runs: Path, *, show: bool = False
) -> bool:
    service = CoordinatorService(
        settings,
        runs_dir=runs,
        coordinator_id=f"c-{job.stem}",
        on_runner=(lambda r: r.events.listeners.append(print_round)) if show else None,
    )
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


async def test_tampered_package_is_refused(
    settings: bus.BrokerSettings, tmp_path: Path, clean_path: object
) -> None:
    # Prepare: bytes that are not the pinned package sit retained on its topic (a broker
    # without ACLs lets anyone publish there); the agent trusts the pinned hash.
    archive = tmp_path / "wine-mlp.tar.gz"
    _, sha, _ = build_command(str(REPO / "packages" / "wine"), str(archive))
    tampered = bytearray(archive.read_bytes())
    tampered[-20] ^= 0xFF
    topics = Topics(settings.prefix)
    task = Task(
        job="tamper",
        round=1,
        task_id="t1",
        kind="train",
        model_version=0,
        config=TrainConfig(
            model="wine_mlp:make_model", data="wine_mlp:load_partition", package=sha
        ),
    )
    client = bus.make_client(settings, "hostile", persistent=False)
    async with (
        package_agents(settings, [tmp_path / "cache"], PackageTrust(frozenset({sha}))) as (agent,),
        client,
    ):
        await client.publish(topics.package(sha), bytes(tampered), qos=1, retain=True)
        await client.subscribe(topics.job_update("tamper", agent.agent_id), qos=1)
        # Execute: a task pinning the real hash.
        await client.publish(
            topics.agent_tasks(agent.agent_id), bytes(encode_envelope(task)), qos=1
        )
        (payload,) = await receive(client, 1)

    # Assert: refused with the reason, nothing unpacked, nothing imported.
    meta, _ = decode_envelope(UpdateMeta, payload)
    assert not meta.success
    assert meta.reason.startswith("PackageRefused:") and "tampered" in meta.reason
    assert not (tmp_path / "cache" / sha).exists()
    assert importlib.util.find_spec("wine_mlp") is None


async def test_agents_refusing_a_package_are_shown_and_not_picked_again(
    settings: bus.BrokerSettings,
    tmp_path: Path,
    clean_path: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare: agent-0 and agent-1 trust the package, agent-2 and agent-3 trust nothing.
    _, sha, _ = build_command(str(REPO / "packages" / "wine"), str(tmp_path / "wine-mlp.tar.gz"))
    job = write_job(tmp_path, "trust", rounds=3, clients_required=1)
    caches = [tmp_path / f"cache-{i}" for i in range(4)]
    async with (
        package_agents(settings, caches[:2], PackageTrust(frozenset({sha}))),
        package_agents(settings, caches[2:], PackageTrust(), first=2),
    ):
        # Execute
        assert await run_job(settings, job, tmp_path / "runs", show=True)

    # Assert: round 1 names both refusals with their reason; later rounds pick only the rest.
    events = read_events(tmp_path / "runs" / "trust" / "events.jsonl")
    ends = [e["data"] for e in events if e["event"] == "ROUND_END"]
    assert len(ends) == 3
    assert sorted(ends[0]["excluded"]) == ["agent-2", "agent-3"]
    assert "not trusted" in ends[0]["failure_reasons"]["agent-2"]
    assert all(sorted(d["selected"]) == ["agent-0", "agent-1"] for d in ends[1:])
    assert all(sorted(d["kept"]) == ["agent-0", "agent-1"] for d in ends[1:])
    out = capsys.readouterr().out
    assert "agent agent-2 cannot run this job" in out and "--trust-package" in out


async def test_package_larger_than_a_chunk_travels_as_retained_chunks(
    settings: bus.BrokerSettings, tmp_path: Path, clean_path: object
) -> None:
    # Prepare: the wine package with 20 kB of (incompressible) data beside its code, and an
    # 8 kB chunk size: the package goes as three retained chunks (tasks and models whole).
    package = tmp_path / "wine"
    shutil.copytree(REPO / "packages" / "wine", package)
    (package / "extra.bin").write_bytes(np.random.default_rng(0).bytes(20_000))
    small = dataclasses.replace(settings, chunk_size=8192)
    _, sha, size = build_command(str(package), str(tmp_path / "wine-mlp.tar.gz"))
    assert size > 2 * 8192
    job = write_job(tmp_path, "chunky", rounds=2)

    # Execute
    caches = [tmp_path / f"cache-{i}" for i in range(4)]
    async with package_agents(small, caches, PackageTrust(frozenset({sha}))) as agents:
        assert await run_job(small, job, tmp_path / "runs")

    # Assert: every agent reassembled, verified and unpacked the package.
    assert [a.packages.stats.fetched_bytes for a in agents] == [size] * 4  # type: ignore[union-attr]
    assert all((cache / sha / "extra.bin").stat().st_size == 20_000 for cache in caches)
    ends = [
        e["data"]
        for e in read_events(tmp_path / "runs" / "chunky" / "events.jsonl")
        if e["event"] == "ROUND_END"
    ]
    assert len(ends) == 2 and all(len(d["kept"]) == 4 for d in ends)


async def test_emulated_fleet_runs_a_package_fetched_once_per_process(
    settings: bus.BrokerSettings, tmp_path: Path, clean_path: object
) -> None:
    # Prepare: eight emulated devices in one process, on the virtual clock.
    fleet_path = tmp_path / "fleet.json.gz"
    save_fleet(fleet_path, build_synthetic(8, seed=3))
    _, sha, size = build_command(str(REPO / "packages" / "wine"), str(tmp_path / "wine-mlp.tar.gz"))
    job = write_job(
        tmp_path,
        "emu",
        rounds=3,
        num_participants=4,
        min_agents=8,
        data_args={"num_partitions": 8, "seed": 0},
        clock="virtual",
        fleet=str(fleet_path),
    )
    packages = AgentPackages(PackageCache(tmp_path / "cache"), PackageTrust(frozenset({sha})))
    emulator = Emulator(load_fleet(fleet_path), settings, name="emu", packages=packages)
    ready = asyncio.Event()
    running = asyncio.create_task(emulator.run(connected=ready))

    # Execute
    try:
        async with asyncio.timeout(60):
            await ready.wait()
        assert await run_job(settings, job, tmp_path / "runs")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    # Assert: one transfer for the whole process; the rounds trained with the package.
    assert (packages.stats.fetched, packages.stats.fetched_bytes) == (1, size)
    ends = [
        e["data"]
        for e in read_events(tmp_path / "runs" / "emu" / "events.jsonl")
        if e["event"] == "ROUND_END"
    ]
    assert len(ends) == 3 and all(len(d["kept"]) == 4 for d in ends)
