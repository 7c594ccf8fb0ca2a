"""Emulated agents over 4 site brokers bridged to a core, against the same fleet on one broker.

For each topology, on loopback: start the brokers (``single``: one mosquitto; ``push``:
a core and ``--sites`` site brokers running ``deploy/mosquitto/bridge.conf``; ``pull``: the
same, with the core pulling the agents' topics, ``bridge-core.conf``), start one
``edge-agent emulate`` process per site with its share of the fleet (agents spread over
the sites; on one broker the same processes all connect to it), wait until every agent's
retained status is online *on the core* (the coordinator's broker), then run ``coordinator
run`` there with rounds of ``--per-round`` (small MLP on digits, one local step, no
evaluation). Prints per topology: time to connect every agent, the coordinator's overhead
per round (its own time outside training, from ROUND_END), the end-to-end round time, and
the peak RSS of every process; then each bridged layout's round time over single-broker's.

Targets (issue 20): connect <= 60 s; overhead <= 150 ms per round at 5,000 agents; bridged
round time within 1.5x of single-broker.

    python bench/bridged_scale.py [--agents 1000] [--per-round 100] [--rounds 10] [--sites 4]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from fleet_scale import PeakRss, count_online  # type: ignore[import-not-found]

from coordinator.bridged_brokers import BridgedBrokers
from coordinator.broker_process import BrokerProcess
from coordinator.events import read_events
from fedbus.fleet import save_fleet
from fedbus.fleet.builders import build_synthetic
from fedbus.fleet.profile import Fleet
from fedbus.protocol.bus import BrokerSettings

REPO = Path(__file__).resolve().parent.parent
# digits holds 1,797 samples: agents share partitions (agent i trains on i mod this many).
MAX_PARTITIONS = 400
TOPOLOGIES = ("single", "push", "pull")


@dataclasses.dataclass
class Result:
    topology: str
    connect_s: float
    overhead_ms: list[float]
    round_s: list[float]
    rss_mb: dict[str, float]


def write_inputs(work: Path, agents: int, per_round: int, rounds: int) -> tuple[Path, Path]:
    partitions = min(agents, MAX_PARTITIONS)
    fleet = build_synthetic(agents, seed=1, availability="lab")
    shared = Fleet(
        tuple(dataclasses.replace(p, partition=i % partitions) for i, p in enumerate(fleet)),
        source=fleet.source,
        seed=fleet.seed,
        description=f"{fleet.description}; partitions shared mod {partitions}",
    )
    fleet_path = work / "fleet.json.gz"
    save_fleet(fleet_path, shared)
    job = {
        "name": "scale",
        "model": "fedbus.examples.digits:make_model",
        "data": "fedbus.examples.digits:load_partition",
        "data_args": {"num_partitions": partitions, "alpha": None, "seed": 0},
        "rounds": rounds,
        "num_participants": per_round,
        "overcommitment": 1.0,
        "clients_required": 1,
        "min_agents": agents,
        "local_steps": 1,
        "batch_size": 8,
        "eval_interval": 0,
        "round_timeout": 300,
        "agent_wait_timeout": 600,
    }
    job_path = work / "job.yaml"
    job_path.write_text(yaml.safe_dump(job))
    return fleet_path, job_path


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", *args], cwd=REPO, env=env, stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_topology(topology: str, args: argparse.Namespace, work: Path) -> Result:
    work.mkdir(parents=True)
    fleet_path, job_path = write_inputs(work, args.agents, args.per_round, args.rounds)
    prefix = "fedbus"
    if topology in ("push", "pull"):
        brokers = BridgedBrokers.create(
            work / "brokers", args.sites, prefix, core_pulls=topology == "pull"
        )
        brokers.start(timeout=60)
        core = brokers.core
        broker_procs = {"core broker": core, **dict(zip(brokers.site_names, brokers.sites, strict=True))}
        site_ports = [s.port for s in brokers.sites]
        stop_brokers = brokers.stop
    else:
        core = BrokerProcess.create(work / "broker")
        core.start()
        broker_procs = {"broker": core}
        site_ports = [core.port] * args.sites
        stop_brokers = core.stop
    share = -(-args.agents // args.sites)
    emulators: list[subprocess.Popen[bytes]] = []
    coordinator = None
    watchers: dict[str, PeakRss] = {}
    try:
        for name, broker in broker_procs.items():
            assert broker.process is not None
            watchers[name] = PeakRss(broker.process.pid)
        launched = time.monotonic()
        for i, port in enumerate(site_ports):
            count = min(share, args.agents - i * share)
            process = spawn(
                ["edge_agent.cli", "emulate", "--fleet", str(fleet_path), "--count", str(count),
                 "--offset", str(i * share), "--name", f"emulator-{i}",
                 "--broker", f"127.0.0.1:{port}"],
                work / f"emulator-{i}.log",
            )  # fmt: skip
            emulators.append(process)
            watchers[f"emulator-{i} ({count} agents)"] = PeakRss(process.pid)
        for watcher in watchers.values():
            watcher.start()
        core_settings = BrokerSettings(port=core.port, prefix=prefix)
        online = asyncio.run(count_online(core_settings, args.agents, timeout=args.connect_timeout))
        connect_s = time.monotonic() - launched if online != float("inf") else online
        coordinator = spawn(
            ["coordinator.cli", "run", str(job_path), "--broker", f"127.0.0.1:{core.port}",
             "--runs-dir", str(work / "runs"), "--quiet"],
            work / "coordinator.log",
        )  # fmt: skip
        watchers["coordinator"] = PeakRss(coordinator.pid)
        watchers["coordinator"].start()
        coordinator.wait(timeout=args.job_timeout)
        for watcher in watchers.values():
            watcher.stop.set()
        ends = [
            e for e in read_events(work / "runs" / "scale" / "events.jsonl")
            if e["event"] == "ROUND_END"
        ]  # fmt: skip
        return Result(
            topology,
            connect_s,
            [e["data"]["timing"]["overhead_s"] * 1e3 for e in ends],
            [e["data"]["duration"] for e in ends],
            {name: w.peak / 2**20 for name, w in watchers.items()},
        )
    finally:
        stop(coordinator)
        for process in emulators:
            stop(process)
        stop_brokers()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(result: Result, args: argparse.Namespace) -> None:
    print(f"[{result.topology}] agents {args.agents}, rounds {len(result.round_s)} of {args.per_round}")
    print(
        f"[{result.topology}] connect (emulators start -> all online on the core): "
        f"{result.connect_s:.1f} s (target <= 60 s)"
    )
    print(
        f"[{result.topology}] coordinator overhead per round (median): "
        f"{median(result.overhead_ms):.1f} ms (target <= 150 ms at 5,000)"
    )
    print(
        f"[{result.topology}] end-to-end round time: median {median(result.round_s):.2f} s, "
        f"best {min(result.round_s, default=float('nan')):.2f} s"
    )
    print(
        f"[{result.topology}] peak RSS MB: "
        + ", ".join(f"{name} {mb:.0f}" for name, mb in result.rss_mb.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument(
        "--topology", choices=("all", *TOPOLOGIES), default="all", help="(default: all three)"
    )
    parser.add_argument("--connect-timeout", type=float, default=600)
    parser.add_argument("--job-timeout", type=float, default=1200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedbus-bridged-"))
    topologies = TOPOLOGIES if args.topology == "all" else (args.topology,)
    results = {}
    for topology in topologies:
        load = os.getloadavg()[0]
        results[topology] = run_topology(topology, args, work / topology)
        report(results[topology], args)
        # On a shared machine other work stretches rounds: say how busy it was.
        print(f"[{topology}] load average (1 min) {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    if "single" in results:
        for layout in ("push", "pull"):
            if layout in results:
                ratio = median(results[layout].round_s) / median(results["single"].round_s)
                print(f"{layout} / single round time: {ratio:.2f}x (target <= 1.5x)")
    print(f"(work dir {work})")


if __name__ == "__main__":
    main()
