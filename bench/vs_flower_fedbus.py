"""The fedbus engines of ``bench/vs_flower.py``: mosquitto, ``coordinator run`` and N agents
(``edge-agent run`` processes, or ``edge-agent emulate``), timed from the broker's side."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.vs_flower_common import CHILD_ENV, REPO, Job, Result
from coordinator.broker_process import BrokerProcess
from coordinator.events import read_events
from fedbus.protocol import bus
from fedbus.protocol.messages import AgentStatus, decode_json
from fedbus.protocol.topics import Topics


def job_yaml(job: Job, name: str, seed_file: Path | None = None) -> dict[str, Any]:
    extra = {"initial_model": str(seed_file)} if seed_file is not None else {}
    return {
        "name": name,
        **extra,
        "model": "fedbus.examples.digits:make_model",
        "data": "fedbus.examples.digits:load_partition",
        "data_args": {"num_partitions": job.n, "alpha": job.alpha, "seed": job.seed},
        "seed": job.seed,
        "rounds": job.rounds,
        "num_participants": job.n,
        "overcommitment": 1.0,
        "clients_required": job.n,
        "min_agents": job.n,
        "agent_wait_timeout": 600,
        "round_timeout": 300,
        "local_steps": job.local_steps,
        "batch_size": job.batch_size,
        "learning_rate": job.lr,
        "momentum": job.momentum,
        "eval_interval": 1,
        "eval_timeout": 300,
        "eval_max_clients": max(job.n, 1),
        "selector": {"name": "random"},
        "aggregator": {"name": "fedavg"},
    }


async def wait_online(settings: bus.BrokerSettings, agents: set[str], timeout: float) -> float:
    """Seconds until every agent in ``agents`` has a retained 'online' status."""
    topics = Topics(settings.prefix)
    began = time.monotonic()
    online: set[str] = set()
    async with bus.make_client(settings, f"bench-online-{os.getpid()}", persistent=False) as c:
        await c.subscribe(topics.all_agent_status(), qos=1)
        async with asyncio.timeout(timeout):
            async for message in c.messages:
                status = decode_json(AgentStatus, bytes(message.payload))  # type: ignore[arg-type]
                if status.state == "online":
                    online.add(status.agent)
                if agents <= online:
                    return time.monotonic() - began
    raise TimeoutError


async def first_task(
    settings: bus.BrokerSettings, agents: list[str], ready: asyncio.Event
) -> float:
    """time.time() when the first task message for any of ``agents`` passes the broker."""
    topics = Topics(settings.prefix)
    async with bus.make_client(settings, f"bench-tasks-{os.getpid()}", persistent=False) as c:
        for agent in agents:
            await c.subscribe(topics.agent_tasks(agent), qos=0)
        ready.set()
        async for _ in c.messages:
            return time.time()
    raise RuntimeError("watcher closed")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def run_fedbus(
    job: Job, work: Path, emulate: bool, emulators: int = 1, seed: bool = True
) -> Result:
    from fedbus.fleet import save_fleet
    from fedbus.fleet.builders import build_synthetic

    engine = "fedbus-emulate" if emulate else "fedbus"
    result = Result(engine)
    if emulate:
        result.extra["emulator_processes"] = emulators
    work.mkdir(parents=True, exist_ok=True)
    broker = BrokerProcess.create(work / "broker")
    broker.start()
    settings = bus.BrokerSettings(port=broker.port)
    address = f"127.0.0.1:{broker.port}"
    env = {**os.environ, **CHILD_ENV}
    name = f"vsflower-{'emu' if emulate else 'proc'}-{job.n}"
    (work / "job.yaml").write_text(yaml.safe_dump(job_yaml(job, name), sort_keys=False))
    if seed:
        # The initial weights, built once beforehand as a deployment would (FEDn's seed
        # model): the coordinator then starts without importing torch. Timed apart.
        built = time.time()
        subprocess.run(
            [
                *(sys.executable, "-m", "coordinator.cli", "seed", str(work / "job.yaml")),
                *("--out", str(work / "seed.npz")),
            ],
            cwd=REPO,
            env={**os.environ, **CHILD_ENV},
            check=True,
            capture_output=True,
        )
        result.extra["seed_build_s"] = time.time() - built
        job_file = job_yaml(job, name, work / "seed.npz")
        (work / "job.yaml").write_text(yaml.safe_dump(job_file, sort_keys=False))
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    py = sys.executable
    agents_procs: list[subprocess.Popen[bytes]] = []
    coordinator: subprocess.Popen[bytes] | None = None
    try:
        launched = time.time()
        if emulate:
            fleet = build_synthetic(job.n, seed=1, availability="lab")
            save_fleet(work / "fleet.json.gz", fleet)
            ids = [p.client_id for p in fleet]
            per = -(-job.n // emulators)
            for k in range(emulators):
                argv = [
                    py,
                    "-m",
                    "edge_agent.cli",
                    "emulate",
                    "--fleet",
                    str(work / "fleet.json.gz"),
                ]
                argv += ["--count", str(per), "--offset", str(k * per), "--name", f"emulator-{k}"]
                argv += ["--broker", address, "--threads", "1"]
                agents_procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=REPO,
                        env=env,
                        stdout=(logs / f"emulator-{k}.log").open("wb"),
                        stderr=subprocess.STDOUT,
                    )
                )
        else:
            ids = [f"agent-{i}" for i in range(job.n)]
            for i, agent in enumerate(ids):
                argv = [py, "-m", "edge_agent.cli", "run", "--id", agent, "--partition", str(i)]
                argv += ["--broker", address, "--threads", "1"]
                agents_procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=REPO,
                        env=env,
                        stdout=(logs / f"{agent}.log").open("wb"),
                        stderr=subprocess.STDOUT,
                    )
                )
        await wait_online(settings, set(ids), timeout=600)
        result.extra["agents_online_s"] = time.time() - launched
        ready = asyncio.Event()
        watcher = asyncio.create_task(first_task(settings, ids, ready))
        await ready.wait()
        began = time.time()
        coordinator = subprocess.Popen(
            [
                py,
                "-m",
                "coordinator.cli",
                "run",
                str(work / "job.yaml"),
                "--broker",
                address,
                "--runs-dir",
                str(work / "runs"),
                "--quiet",
            ],
            cwd=REPO,
            env=env,
            stdout=(logs / "coordinator.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        code = await asyncio.to_thread(coordinator.wait)
        ended = time.time()
        first = await asyncio.wait_for(watcher, 1) if watcher.done() else None
        if first is None:
            watcher.cancel()
        result.total_s = ended - began
        result.extra["cold_total_s"] = ended - launched
        result.first_task_s = first - began if first else None
        if code != 0:
            result.ok = False
            result.note = f"coordinator exit {code}; see {logs / 'coordinator.log'}"
    finally:
        _stop(([coordinator] if coordinator else []) + agents_procs)
        broker.stop()
    events = read_events(work / "runs" / name / "events.jsonl")
    by = {}
    for e in events:
        by.setdefault(e["event"], []).append(e)
    begins = {e["round"]: e["ts"] for e in by.get("ROUND_BEGIN", [])}
    ends = {e["round"]: e for e in by.get("ROUND_END", [])}
    for r in sorted(ends):
        nxt = begins.get(r + 1, ends[r]["ts"])
        result.rounds.append(nxt - begins[r])
        result.train_phase.append(ends[r]["data"]["duration"])
    if by.get("JOB_END"):
        result.accuracy = by["JOB_END"][-1]["data"].get("accuracy")
    if by.get("JOB_BEGIN") and by.get("ROUND_BEGIN"):
        result.extra["launch_to_job_begin_s"] = by["JOB_BEGIN"][0]["ts"] - began
        result.extra["job_begin_to_round_begin_s"] = (
            by["ROUND_BEGIN"][0]["ts"] - by["JOB_BEGIN"][0]["ts"]
        )
    overhead = [e["data"]["timing"]["overhead_s"] for e in ends.values()]
    if overhead:
        result.extra["coordinator_overhead_s"] = statistics.median(overhead)
    result.extra["rounds_done"] = len(ends)
    return result
