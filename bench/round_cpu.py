"""Where a round's CPU goes: agents, coordinator and broker, per round, on one fleet.

    .venv/bin/python bench/round_cpu.py [--agents 50] [--rounds 15] [--jobs 3] [--local-steps 20]

The job of ``bench/vs_flower.py`` (digits MLP, every agent every round, federated
evaluation after every round, from a seed file) run ``--jobs`` times one after the other
by ``coordinator run`` against the same ``--agents`` ``edge-agent run --threads 1``
processes and one mosquitto. For each job it prints the per-round time (median of
rounds 2..R, as vs_flower) and the CPU seconds per round of the agent processes (all
threads, from /proc), of the coordinator and of mosquitto, with the agents' context
switches per agent and round (voluntary: waiting for a message; involuntary: preempted).

With many agent processes on few cores a round is CPU-bound: the per-round time is
about the CPU of one round over the cores. The first job also carries the agents'
warm-up (the first round of training runs in a worker thread, torch warms up); compare
the later ones. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.vs_flower import CHILD_ENV, Job, _stop, job_yaml, wait_online  # noqa: E402
from coordinator.broker_process import BrokerProcess  # noqa: E402
from coordinator.events import read_events  # noqa: E402
from fedbus.protocol import bus  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    voluntary: int
    involuntary: int

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.cpu_s - other.cpu_s,
            self.voluntary - other.voluntary,
            self.involuntary - other.involuntary,
        )


def usage(pid: int) -> Usage:
    """CPU (user + system, all threads) and context switches of a process so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return Usage(0.0, 0, 0)
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return Usage(
        (int(stat[11]) + int(stat[12])) / TICKS,
        int(fields["voluntary_ctxt_switches"]),
        int(fields["nonvoluntary_ctxt_switches"]),
    )


def total(usages: list[Usage]) -> Usage:
    return Usage(
        sum(u.cpu_s for u in usages),
        sum(u.voluntary for u in usages),
        sum(u.involuntary for u in usages),
    )


async def run(n: int, rounds: int, jobs: int, work: Path, local_steps: int = 20) -> None:
    job = Job(n, rounds, local_steps, 32, 0.05, 0.9, 0.5, 0)
    broker = BrokerProcess.create(work / "broker")
    broker.start()
    assert broker.process is not None
    settings = bus.BrokerSettings(port=broker.port)
    address = f"127.0.0.1:{broker.port}"
    env = {**os.environ, **CHILD_ENV}
    py = sys.executable
    (work / "seed.yaml").write_text(yaml.safe_dump(job_yaml(job, "seed"), sort_keys=False))
    subprocess.run(
        [
            py,
            "-m",
            "coordinator.cli",
            "seed",
            str(work / "seed.yaml"),
            "--out",
            str(work / "seed.npz"),
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    ids = [f"agent-{i}" for i in range(n)]
    agents: list[subprocess.Popen[bytes]] = []
    try:
        launched = time.monotonic()
        for i, agent in enumerate(ids):
            argv = [py, "-m", "edge_agent.cli", "run", "--id", agent, "--partition", str(i)]
            argv += ["--broker", address, "--threads", "1"]
            log = (work / f"{agent}.log").open("wb")
            agents.append(
                subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        await wait_online(settings, set(ids), timeout=600)
        print(f"{n} agents online in {time.monotonic() - launched:.1f} s", flush=True)
        for k in range(jobs):
            name = f"cpu-{k}"
            job_file = work / f"{name}.yaml"
            job_file.write_text(
                yaml.safe_dump(job_yaml(job, name, work / "seed.npz"), sort_keys=False)
            )
            await asyncio.sleep(2)  # let the last job's stragglers settle
            agents_before, broker_before = [usage(a.pid) for a in agents], usage(broker.process.pid)
            argv = [py, "-m", "coordinator.cli", "run", str(job_file), "--broker", address]
            argv += ["--runs-dir", str(work / "runs"), "--quiet"]
            log = (work / f"{name}.log").open("wb")
            coordinator = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            coordinator_usage = Usage(0.0, 0, 0)
            while coordinator.poll() is None:  # the last reading before it exits
                coordinator_usage = usage(coordinator.pid)
                await asyncio.sleep(0.05)
            agents_used = total([usage(a.pid) for a in agents]) - total(agents_before)
            broker_used = usage(broker.process.pid) - broker_before
            events = read_events(work / "runs" / name / "events.jsonl")
            begins = {e["round"]: e["ts"] for e in events if e["event"] == "ROUND_BEGIN"}
            cycles = [begins[r + 1] - begins[r] for r in sorted(begins) if r + 1 in begins]
            done = len(begins)
            if coordinator.returncode != 0 or not cycles:
                print(f"{name}: coordinator exit {coordinator.returncode}; see {work}")
                continue
            steady = cycles[1:] or cycles
            print(
                f"{name}: per-round {statistics.median(steady) * 1e3:.0f} ms "
                f"(median of rounds 2..{done}); CPU per round: agents "
                f"{agents_used.cpu_s / done * 1e3:.0f} ms "
                f"({agents_used.cpu_s / done / n * 1e3:.1f} ms each), coordinator "
                f"{coordinator_usage.cpu_s / done * 1e3:.0f} ms (start-up included), "
                f"mosquitto {broker_used.cpu_s / done * 1e3:.0f} ms; context switches per "
                f"agent and round: {agents_used.voluntary / done / n:.1f} voluntary, "
                f"{agents_used.involuntary / done / n:.1f} involuntary",
                flush=True,
            )
    finally:
        _stop(agents)
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument(
        "--local-steps",
        type=int,
        default=20,
        help="SGD steps per round (1: the round's fixed cost of messages and validation)",
    )
    parser.add_argument("--work", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fedbus-roundcpu-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores, load {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    asyncio.run(run(args.agents, args.rounds, args.jobs, work, args.local_steps))


if __name__ == "__main__":
    main()
