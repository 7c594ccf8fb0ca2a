"""The scheduler inside a real `coordinator serve`: three jobs, six agent processes, a broker.

The small real-broker companion of ``bench/multi_job.py`` (which simulates 1,000 devices
on the virtual clock): mosquitto on a free loopback port, six ``edge-agent run``
processes (three tagged ``lab``), and one ``CoordinatorService`` per policy serving three
digits jobs submitted a moment apart: one for ``lab`` agents only, one that needs four
agents a round, one that over-commits (its third agent straggles on after each round).
A monitor subscribed to every task, update and result counts, in the broker's order,
tasks sent to an agent that still held another job's task, and tasks sent to agents
outside the job's ``requires:``. A first, unreported run (policy random) warms the agents
up (process start, torch, data). Wall-clock figures on a shared two-core machine are
indicative only; the counts are what this run shows.

    .venv/bin/python bench/multi_job_serve.py [--policies fifo srsf scarcity]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coordinator.broker_process import BrokerProcess
from coordinator.config import JobConfig, parse_job
from coordinator.service import CoordinatorService
from fedbus.protocol import bus
from fedbus.protocol.messages import ResultMeta, Task, UpdateMeta, decode_envelope
from fedbus.protocol.topics import TopicKind, Topics

REPO = Path(__file__).resolve().parents[1]
AGENTS = 6
TAGGED = 3
DATA = {"num_partitions": AGENTS, "alpha": 0.5, "seed": 0}


def jobs(suffix: str) -> list[JobConfig]:
    base = {
        "model": "fedbus.examples.digits:make_model",
        "data": "fedbus.examples.digits:load_partition",
        "data_args": DATA,
        "rounds": 5,
        "overcommitment": 1.0,
        "local_steps": 50,
        "batch_size": 16,
        "round_timeout": 60,
    }
    specs = [
        {"name": f"lab-{suffix}", "num_participants": 2, "requires": {"tags": ["lab"]}},
        {"name": f"wide-{suffix}", "num_participants": 4},
        {"name": f"over-{suffix}", "num_participants": 2, "overcommitment": 1.5},
    ]
    return [parse_job({**base, **spec, "min_agents": 2}, "<bench>") for spec in specs]


class Monitor:
    """Tasks and answers in the broker's order: overlaps across jobs, ineligible asks."""

    def __init__(self, settings: bus.BrokerSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.prefix)
        self.open: dict[str, dict[str, str]] = {}
        self.tasks = 0
        self.overlaps = 0
        self.ineligible = 0
        self.lab_only: set[str] = set()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        client = bus.make_client(self.settings, "bench-monitor", persistent=False)
        async with client:
            for topic in ("agents/+/tasks", "jobs/+/updates/+", "jobs/+/results/+"):
                await client.subscribe(f"{self.settings.prefix}/{topic}", qos=1)
            self.ready.set()
            async for message in client.messages:
                self.see(str(message.topic), bytes(message.payload))  # type: ignore[arg-type]

    def see(self, topic: str, payload: bytes) -> None:
        parsed = self.topics.parse(topic)
        held = self.open.setdefault(parsed.agent or "", {})
        if parsed.kind is TopicKind.AGENT_TASKS:
            task, _ = decode_envelope(Task, payload)
            self.tasks += 1
            self.overlaps += any(job != task.job for job in held.values())
            tagged = int((parsed.agent or "a-99").split("-")[1]) < TAGGED
            self.ineligible += task.job in self.lab_only and not tagged
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


async def serve_policy(
    settings: bus.BrokerSettings, policy: str, runs: Path, monitor: Monitor
) -> tuple[dict[str, float], float]:
    """JCT (s) per job, from its submission to its end; the makespan."""
    service = CoordinatorService(
        settings, runs_dir=runs / policy, policy=policy, coordinator_id=f"c-{policy}"
    )
    configs = jobs(policy)
    monitor.lab_only.add(configs[0].name)
    submitted: dict[str, float] = {}
    ended: dict[str, float] = {}
    serving = asyncio.create_task(service.serve())
    try:
        await asyncio.wait_for(service.connected.wait(), 30)
        for config in configs:
            submitted[config.name] = time.monotonic()
            service.submit(config)
            await asyncio.sleep(0.5)
        async with asyncio.timeout(600):
            while len(ended) < len(configs):
                for name in set(service.results) - set(ended):
                    ended[name] = time.monotonic()
                await asyncio.sleep(0.05)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    failed = [n for n, ok in service.results.items() if not ok]
    if failed:
        raise RuntimeError(f"{policy}: jobs did not complete: {failed}")
    makespan = max(ended.values()) - min(submitted.values())
    return {name: ended[name] - submitted[name] for name in submitted}, makespan


async def main_async(policies: list[str]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="multi-job-serve-"))
    broker = BrokerProcess.create(workdir / "broker")
    broker.start()
    settings = bus.BrokerSettings(port=broker.port, prefix="mjs", keepalive=15)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    agents = [
        subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--id", f"a-{i}", "--partition", str(i),
             "--threads", "1", "--broker", f"127.0.0.1:{broker.port}", "--prefix", settings.prefix,
             *(["--tag", "lab"] if i < TAGGED else [])],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for i in range(AGENTS)
    ]  # fmt: skip
    monitor = Monitor(settings)
    watching = asyncio.create_task(monitor.run())
    try:
        await asyncio.wait_for(monitor.ready.wait(), 30)
        # Warm-up, not reported: agents start torch and load their data on the first task.
        await serve_policy(settings, "random", workdir / "runs", monitor)
        print(f"{AGENTS} agent processes ({TAGGED} tagged lab), 3 jobs x 5 rounds per policy")
        print(f"{'policy':<10} {'avg JCT s':>9} {'makespan s':>10}  per job")
        for policy in policies:
            jct, makespan = await serve_policy(settings, policy, workdir / "runs", monitor)
            per_job = "  ".join(f"{name.rsplit('-', 1)[0]} {t:.1f}" for name, t in jct.items())
            print(f"{policy:<10} {sum(jct.values()) / len(jct):9.1f} {makespan:10.1f}  {per_job}")
        print(
            f"tasks {monitor.tasks}: sent to an agent holding another job's task {monitor.overlaps}, "
            f"to an agent outside requires: {monitor.ineligible}"
        )
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="+", default=["fifo", "srsf", "scarcity"])
    asyncio.run(main_async(parser.parse_args().policies))


if __name__ == "__main__":
    main()
