"""Bring your own code (issue #18): compute packages, custom metrics, Flower clients.

    .venv/bin/python bench/packages.py [--flower] [--text ../shared/data/tinyshakespeare.txt]

One mosquitto on a free loopback port, four real agents (own MQTT connections, own package
caches) in this process, the coordinator service in this process. Prints:

- wine package (packages/wine): archive bytes and SHA-256; per agent the bytes fetched,
  fetch + verify + unpack seconds, for a first job and a second job with the same package
  (expected: no transfer); the final accuracy and macro F1 (the package's own metric:
  weighted mean, median, min-max across agents); a tampered copy of the package refused.
- Tiny Shakespeare char-LM (packages/shakespeare, 10 rounds): perplexity per round
  (weighted mean and the agents' range).
- ``--flower``: the quickstart-shaped Flower client of tests/integration, 10 rounds from the
  same seed file, under Flower's simulation engine (child process, ray) and on fedbus
  agents: final federated accuracy of each and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coordinator.broker_process import BrokerProcess  # noqa: E402
from coordinator.config import load_job  # noqa: E402
from coordinator.events import read_events  # noqa: E402
from coordinator.packages import build_command  # noqa: E402
from coordinator.service import CoordinatorService  # noqa: E402
from edge_agent.agent import AgentIdentity, EdgeAgent  # noqa: E402
from edge_agent.model_store import ModelStore  # noqa: E402
from edge_agent.packages import AgentPackages, PackageTrust  # noqa: E402
from edge_agent.trainer import LocalTrainer  # noqa: E402
from fedbus.packages import PackageRefused  # noqa: E402
from fedbus.packages.cache import PackageCache  # noqa: E402
from fedbus.protocol import bus  # noqa: E402
from fedbus.protocol.messages import AgentProfile  # noqa: E402


@contextlib.asynccontextmanager
async def agents(
    settings: bus.BrokerSettings, caches: list[Path], trust: PackageTrust, **extra: Any
) -> AsyncIterator[list[EdgeAgent]]:
    trainer, models, lock = LocalTrainer("cpu"), ModelStore(), asyncio.Lock()
    fleet = [
        EdgeAgent(
            AgentIdentity(f"agent-{i}", i, AgentProfile(partition=i)),
            settings,
            trainer,
            models,
            compute_lock=lock,
            packages=AgentPackages(PackageCache(cache), trust),
            **extra,
        )
        for i, cache in enumerate(caches)
    ]
    tasks = [asyncio.create_task(a.run()) for a in fleet]
    try:
        await asyncio.wait_for(asyncio.gather(*(a.connected.wait() for a in fleet)), 30)
        yield fleet
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_job(settings: bus.BrokerSettings, job: dict[str, Any], work: Path) -> list[dict]:
    path = work / f"{job['name']}.yaml"
    path.write_text(yaml.safe_dump(job))
    service = CoordinatorService(settings, runs_dir=work / "runs", coordinator_id=job["name"])
    service.submit(load_job(path))
    results = await asyncio.wait_for(service.serve(exit_when_idle=True), 600)
    assert results[job["name"]], f"job {job['name']} failed"
    return read_events(work / "runs" / job["name"] / "events.jsonl")


def summary(stat: dict[str, float]) -> str:
    return (
        f"mean {stat['mean']:.4f}  median {stat['median']:.4f}  "
        f"agents {stat['min']:.4f}..{stat['max']:.4f}"
    )


COMMON = {
    "num_participants": 4,
    "overcommitment": 1.0,
    "min_agents": 4,
    "round_timeout": 120,
    "eval_timeout": 120,
}


async def bench_wine(settings: bus.BrokerSettings, work: Path) -> None:
    _, sha, size = build_command(str(REPO / "packages" / "wine"), str(work / "wine.tar.gz"))
    print(f"wine package: {size} bytes, sha256 {sha}")
    caches = [work / f"wine-cache-{i}" for i in range(4)]
    job = {"package": "wine.tar.gz", "data_args": {"num_partitions": 4}, "rounds": 10, **COMMON}
    async with agents(settings, caches, PackageTrust(frozenset({sha}))) as fleet:
        for name in ("wine-1", "wine-2"):
            before = [
                (a.packages.stats.fetched_bytes, a.packages.stats.fetch_seconds) for a in fleet
            ]  # type: ignore[union-attr]
            events = await run_job(settings, {**job, "name": name}, work)
            for agent, (b0, s0) in zip(fleet, before, strict=True):
                stats = agent.packages.stats  # type: ignore[union-attr]
                print(
                    f"  {name} {agent.agent_id}: fetched {stats.fetched_bytes - b0} bytes "
                    f"in {stats.fetch_seconds - s0:.3f} s (fetch, verify, unpack)"
                )
            end = next(e for e in events if e["event"] == "JOB_END")["data"]
            last = [e["data"] for e in events if e["event"] == "ROUND_END"][-1]
            print(
                f"  {name}: final accuracy {end['accuracy']:.4f}; macro_f1 {summary(last['metrics']['macro_f1'])}"
            )
    tampered = bytearray((work / "wine.tar.gz").read_bytes())
    tampered[-20] ^= 0xFF
    try:
        PackageCache(work / "tamper-cache").install(sha, tampered)
        print("  tampered package: ACCEPTED (wrong)")
    except PackageRefused as exc:
        print(f"  tampered package: refused: {exc}")


async def bench_shakespeare(settings: bus.BrokerSettings, work: Path, text: Path) -> None:
    _, sha, size = build_command(str(REPO / "packages" / "shakespeare"), str(work / "lm.tar.gz"))
    print(f"tiny-shakespeare package: {size} bytes")
    caches = [work / f"lm-cache-{i}" for i in range(4)]
    job = {
        "name": "lm",
        "package": "lm.tar.gz",
        "data_args": {"path": str(text.resolve()), "num_partitions": 4},
        "rounds": 10,
        "local_steps": 20,
        "batch_size": 16,
        "learning_rate": 0.5,
        **COMMON,
    }
    async with agents(settings, caches, PackageTrust(frozenset({sha}))):
        events = await run_job(settings, job, work)
    for e in events:
        if e["event"] == "ROUND_END":
            print(
                f"  round {e['round']:2d}  perplexity {summary(e['data']['metrics']['perplexity'])}"
            )


async def bench_flower(settings: bus.BrokerSettings, work: Path) -> None:
    from coordinator import seed_model
    from edge_agent.flower import FlowerClientRunner, initial_parameters
    from tests.integration.flower_simulation import FIT_CONFIG

    client = "tests.integration.flower_quickstart:client_fn"
    seed = work / "flower-seed.npz"
    seed_model.save(seed, initial_parameters(client, 0, 4))
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.flower_simulation", "10", str(seed)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("ACCURACIES "))
    flower = json.loads(line.removeprefix("ACCURACIES "))
    runners = [FlowerClientRunner(client, 4) for _ in range(4)]
    job = {
        "name": "flower",
        "model": client,
        "data": client,
        "initial_model": str(seed),
        "rounds": 10,
        **FIT_CONFIG,
        **COMMON,
    }
    caches = [work / f"f-cache-{i}" for i in range(4)]
    async with agents(settings, caches, PackageTrust()) as fleet:
        for agent, runner in zip(fleet, runners, strict=True):
            agent.train_fn, agent.validate_fn = runner.train, runner.validate
        events = await run_job(settings, job, work)
    ours = next(e for e in events if e["event"] == "JOB_END")["data"]["accuracy"]
    print(
        f"flower client, 10 rounds: final accuracy flower-sim {flower[-1]:.4f}  "
        f"fedbus {ours:.4f}  difference {abs(ours - flower[-1]):.4f}"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="fedbus-bench-packages-") as tmp:
        work = Path(tmp)
        broker = BrokerProcess.create(work / "broker")
        broker.start()
        try:
            settings = bus.BrokerSettings(port=broker.port, prefix="bench", keepalive=15)
            await bench_wine(settings, work)
            if args.text.is_file():
                await bench_shakespeare(settings, work, args.text)
            else:
                print(f"tiny-shakespeare: skipped, no {args.text}")
            if args.flower:
                await bench_flower(settings, work)
        finally:
            broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flower", action="store_true", help="also Flower vs fedbus (needs flwr)")
    parser.add_argument(
        "--text", type=Path, default=REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
    )
    asyncio.run(main(parser.parse_args()))
