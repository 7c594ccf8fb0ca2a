"""1,000 emulated agents on one mosquitto: connect time, coordinator overhead, memory.

Starts mosquitto (the repo config, a free port), builds a synthetic always-on fleet,
starts ``edge-agent emulate`` for all of it in one process, waits until every agent's
retained status is online, then runs ``coordinator run`` with rounds of 100 (small MLP on
digits, one local step). Prints: time to connect all agents, the coordinator's own time
per round outside training (selection, dispatch, ingest, aggregation, checkpoint; from the
ROUND_END events), and the peak RSS of the coordinator and of the emulator process.
Targets (issue 3): all connected in <= 30 s; overhead <= 100 ms per round.

    python bench/fleet_scale.py [--agents 1000] [--per-round 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

from coordinator.broker_process import BrokerProcess
from coordinator.events import read_events
from fedbus.fleet import save_fleet
from fedbus.fleet.builders import build_synthetic
from fedbus.protocol import bus
from fedbus.protocol.messages import AgentStatus, decode_json
from fedbus.protocol.topics import Topics

REPO = Path(__file__).resolve().parent.parent


class PeakRss(threading.Thread):
    """Samples a process's RSS every 50 ms and keeps the maximum."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            self.stop.wait(0.05)


async def count_online(settings: bus.BrokerSettings, expected: int, timeout: float) -> float:
    """Seconds until ``expected`` agents have published a retained 'online' status."""
    topics = Topics(settings.prefix)
    online: set[str] = set()
    began = time.monotonic()
    async with bus.make_client(settings, "bench-watch", persistent=False) as client:
        await client.subscribe(topics.all_agent_status(), qos=1)
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                status = decode_json(AgentStatus, bytes(message.payload))  # type: ignore[arg-type]
                if status.state == "online":
                    online.add(status.agent)
                if len(online) >= expected:
                    return time.monotonic() - began
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fedbus-scale-"))
    fleet_path = work / "fleet.json.gz"
    save_fleet(fleet_path, build_synthetic(args.agents, seed=1, availability="lab"))
    broker = BrokerProcess.create(work / "broker", extra_conf="")
    broker.start()
    settings = bus.BrokerSettings(port=broker.port)
    address = f"127.0.0.1:{broker.port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    job = {
        "name": "scale",
        "model": "fedbus.examples.digits:make_model",
        "data": "fedbus.examples.digits:load_partition",
        "data_args": {"num_partitions": args.agents, "alpha": None, "seed": 0},
        "rounds": args.rounds,
        "num_participants": args.per_round,
        "overcommitment": 1.0,
        "clients_required": 1,
        "min_agents": args.agents,
        "local_steps": 1,
        "batch_size": 8,
        "eval_interval": 0,
        "round_timeout": 120,
        "agent_wait_timeout": 120,
    }
    job_path = work / "job.yaml"
    job_path.write_text(yaml.safe_dump(job))
    emulator = coordinator = None
    try:
        launched = time.monotonic()
        emulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "emulate",
                "--fleet",
                str(fleet_path),
                "--broker",
                address,
            ],
            cwd=REPO,
            env=env,
            stdout=(work / "emulator.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        emu_rss = PeakRss(emulator.pid)
        emu_rss.start()
        # The emulator says so once the fleet is loaded and torch imported, before any agent
        # connects: its RSS then is the baseline the agents add to.
        log_path = work / "emulator.log"
        deadline = time.monotonic() + 60
        while "emulating" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        base_rss = psutil.Process(emulator.pid).memory_info().rss
        connect_s = asyncio.run(count_online(settings, args.agents, timeout=120))
        connect_s = time.monotonic() - launched if connect_s != float("inf") else connect_s
        idle_rss = psutil.Process(emulator.pid).memory_info().rss
        coordinator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coordinator.cli",
                "run",
                str(job_path),
                "--broker",
                address,
                "--runs-dir",
                str(work / "runs"),
                "--quiet",
            ],
            cwd=REPO,
            env=env,
            stdout=(work / "coordinator.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        coord_rss = PeakRss(coordinator.pid)
        coord_rss.start()
        coordinator.wait(timeout=600)
        coord_rss.stop.set()
        emu_rss.stop.set()
        events = read_events(work / "runs" / "scale" / "events.jsonl")
        ends = [e for e in events if e["event"] == "ROUND_END"]
        overheads = [e["data"]["timing"]["overhead_s"] for e in ends]
        parts = {
            k: statistics.median(e["data"]["timing"][k] for e in ends)
            for k in ("select_s", "dispatch_s", "ingest_s", "aggregate_s", "checkpoint_s")
        }
        walls = [e["data"]["duration"] for e in ends]
        print(
            f"agents: {args.agents}, rounds: {len(ends)} of {args.per_round} (emulator process: 1)"
        )
        print(
            f"time to connect all agents (process start -> all retained online): {connect_s:.1f} s (target <= 30 s)"
        )
        per_agent = (idle_rss - base_rss) / args.agents / 2**20
        print(
            f"emulator RSS: {base_rss / 2**20:.0f} MB before connecting, {idle_rss / 2**20:.0f} MB "
            f"with all agents connected and idle = {per_agent:.3f} MB per idle agent (target < 1 MB)"
        )
        if overheads:
            print(
                f"coordinator overhead per round (median of {len(overheads)}): "
                f"{statistics.median(overheads) * 1e3:.1f} ms (target <= 100 ms)"
            )
            print(
                "  median parts: "
                + ", ".join(f"{k[:-2]} {v * 1e3:.1f} ms" for k, v in parts.items())
            )
            print(
                f"round wall time incl. training 100 agents (median): {statistics.median(walls):.2f} s"
            )
        print(
            f"peak RSS: coordinator {coord_rss.peak / 2**20:.0f} MB, emulator {emu_rss.peak / 2**20:.0f} MB"
        )
        print(f"(work dir {work})")
    finally:
        for proc in (coordinator, emulator):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        broker.stop()


if __name__ == "__main__":
    main()
