"""Adaptive training on the wall clock: 8 real ``edge-agent run`` processes, on and off.

Eight agent processes on this machine, made heterogeneous with the agent's test aids
(``--slowdown`` 1x-8x compute, ``--link`` 1-50 Mbit/s token buckets on their own sends and
receives), train MNIST-5k's 784-128-10 MLP (102k parameters, 408 kB dense each way) with K
= 4 of 6 dispatched per round (random selector, seeded), the coordinator evaluating the
global model on the held-out test set every round. The same job runs twice with the same
seeds and fresh agents: ``adaptive_training: false`` (every agent trains E local steps and
uploads the dense delta; the round keeps the first 4 of 6 arrivals), then ``true`` with
``t_budget`` (every agent plans steps and payload against the budget from its measured step
time and link throughput, the model's download included).

Prints per run: wall-clock seconds to the target accuracy, rounds, final accuracy, the
95th percentile of the agents' round time (their own measured t_dl + t_comp + planned
t_ul) over t_budget, and mean upload bytes per update by link; then the speedup.
Issue #17's targets: speedup >= 1.3x, p95 <= 1.1 x t_budget, slow links send fewer bytes.

    python bench/adaptive_wall.py                  # ../shared/data/mnist_5k.csv.gz
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.broker_process import BrokerProcess
from coordinator.config import parse_job
from coordinator.events import read_events
from coordinator.service import CoordinatorService
from fedbus.protocol import bus

REPO = Path(__file__).resolve().parent.parent
AGENT_FLAGS: list[str] = []  # e.g. ["-v"] to see the agents' INFO logs
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist_5k.csv.gz"
# (slowdown, link) per agent: compute 1x-8x and links 1-50 Mbit/s, not in step.
AGENTS = [
    (1.0, "50mbit"),
    (8.0, "20mbit"),
    (2.0, "10mbit"),
    (4.0, "5mbit"),
    (1.0, "2mbit"),
    (8.0, "1mbit"),
    (2.0, "1mbit"),
    (4.0, "50mbit"),
]


def spawn_agents(
    broker: BrokerProcess, prefix: str, data_args: dict[str, Any], logs: Path
) -> list[subprocess.Popen[bytes]]:
    import json

    procs = []
    for i, (slowdown, link) in enumerate(AGENTS):
        command = [
            sys.executable, "-m", "edge_agent.cli", *AGENT_FLAGS, "run",
            "--id", f"agent-{i}", "--partition", str(i), "--threads", "1",
            "--slowdown", str(slowdown), "--link", link, "--telemetry-interval", "0",
            "--data", "fedbus.examples.mnist:load_partition",
            "--data-args", json.dumps(data_args),
            "--broker", f"127.0.0.1:{broker.port}", "--prefix", prefix,
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(
                command,
                stdout=(logs / f"agent-{i}.log").open("ab"),
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        )
    return procs


def job(name: str, args: argparse.Namespace, data_args: dict[str, Any], adaptive: bool) -> Any:
    return parse_job(
        {
            "name": name,
            "model": "fedbus.examples.mnist:make_model",
            "data": "fedbus.examples.mnist:load_partition",
            "data_args": data_args,
            "test_data": "fedbus.examples.mnist:load_test",
            "test_data_args": data_args,
            "seed": args.seed,
            "rounds": args.rounds,
            "num_participants": 4,
            "overcommitment": 1.5,  # 6 dispatched, the first 4 successful kept
            "clients_required": 4,
            "min_agents": len(AGENTS),
            "agent_wait_timeout": 180,
            "round_timeout": args.round_timeout,
            "local_steps": args.local_steps,
            "batch_size": 32,
            "learning_rate": 0.05,
            "eval_interval": 1,
            "selector": {"name": "random", "seed": args.seed},
            "adaptive_training": adaptive,
            "t_budget": args.t_budget,
        },
        "<adaptive_wall>",
    )


async def run_job(broker: BrokerProcess, prefix: str, runs: Path, config: Any) -> bool:
    settings = bus.BrokerSettings(port=broker.port, prefix=prefix, keepalive=15)
    service = CoordinatorService(settings, runs_dir=runs)
    service.submit(config)
    results = await service.serve(exit_when_idle=True)
    return bool(results.get(config.name))


def summarise(events: list[dict[str, Any]], target: float, t_budget: float) -> dict[str, Any]:
    begins = [e["ts"] for e in events if e["event"] == "ROUND_BEGIN"]
    tests = [e for e in events if e["event"] == "TEST_RESULT"]
    ends = [e["data"] for e in events if e["event"] in ("ROUND_END", "ROUND_FAILED")]
    start = min(begins)
    hit = next((e for e in tests if e["data"]["accuracy"] >= target), None)
    durations = [d for end in ends for d in end.get("durations", {}).values()]
    sent: dict[str, list[int]] = defaultdict(list)
    for end in ends:
        for agent, nbytes in end.get("update_bytes", {}).items():
            sent[agent].append(nbytes)
    by_link: dict[str, list[int]] = defaultdict(list)
    for i, (_slow, link) in enumerate(AGENTS):
        by_link[link] += sent.get(f"agent-{i}", [])
    p95 = statistics.quantiles(durations, n=20)[-1] if len(durations) >= 2 else None
    return {
        "time_to_target": None if hit is None else hit["ts"] - start,
        "round_to_target": None if hit is None else hit["round"],
        "rounds": len(ends),
        "failed_rounds": sum(1 for e in ends if not e["ok"]),
        "final_accuracy": tests[-1]["data"]["accuracy"] if tests else None,
        "wall": max(e["ts"] for e in events) - start,
        "p95_over_budget": None if p95 is None else p95 / t_budget,
        "median_round": statistics.median(e["duration"] for e in ends) if ends else None,
        "bytes_by_link": {k: statistics.mean(v) for k, v in by_link.items() if v},
        "failed_updates": sum(len(e.get("failed", [])) for e in ends),
    }


def show(name: str, s: dict[str, Any], target: float) -> None:
    ttt = "never" if s["time_to_target"] is None else f"{s['time_to_target']:.1f} s"
    p95 = "-" if s["p95_over_budget"] is None else f"{s['p95_over_budget']:.2f}"
    print(
        f"{name:>13}: time to {target:.0%} {ttt} (round {s['round_to_target']}), "
        f"{s['rounds']} rounds ({s['failed_rounds']} failed) in {s['wall']:.1f} s, "
        f"median round {s['median_round']:.2f} s, final accuracy {s['final_accuracy']:.3f}, "
        f"p95 agent round time / t_budget {p95}, failed updates {s['failed_updates']}"
    )
    links = sorted(s["bytes_by_link"], key=lambda k: float(k[:-4]))
    print(
        f"{'':>13}  mean bytes per update by link: "
        + ", ".join(f"{k} {s['bytes_by_link'][k] / 1e3:.0f} kB" for k in links)
    )


async def study(args: argparse.Namespace, work: Path) -> int:
    data = Path(args.data)
    if not data.is_file():
        print(f"no data file {data} (MNIST-5k, in ../shared/data)", file=sys.stderr)
        return 2
    data_args = {"path": str(data.resolve()), "num_partitions": len(AGENTS), "alpha": 0.5}
    data_args["seed"] = args.seed
    broker = BrokerProcess.create(work / "broker")
    broker.start()
    summaries: dict[str, dict[str, Any]] = {}
    try:
        for adaptive in (False, True):
            name = "adaptive" if adaptive else "non-adaptive"
            prefix = f"aw{uuid.uuid4().hex[:6]}"
            logs = work / name
            logs.mkdir()
            config = job(name, args, data_args, adaptive)
            procs = spawn_agents(broker, prefix, data_args, logs)
            try:
                began = time.monotonic()
                ok = await run_job(broker, prefix, work, config)
                print(f"# {name}: job {'finished' if ok else 'failed'} after "
                      f"{time.monotonic() - began:.0f} s (agents' start-up included)", flush=True)  # fmt: skip
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(10)
            summaries[name] = summarise(
                read_events(work / name / "events.jsonl"), args.target, args.t_budget
            )
    finally:
        broker.stop()
    print(
        f"adaptive_wall: {len(AGENTS)} edge-agent processes (slowdown, link) = "
        + ", ".join(f"({s:g}x, {link})" for s, link in AGENTS)
    )
    print(
        f"MNIST-5k 784-128-10 MLP (102k params), K=4 of 6, random selector seed {args.seed}, "
        f"E={args.local_steps}, t_budget {args.t_budget} s, target {args.target:.0%} "
        f"(server-side test set), up to {args.rounds} rounds"
    )
    for name, s in summaries.items():
        show(name, s, args.target)
    base, fast = (
        summaries["non-adaptive"]["time_to_target"],
        summaries["adaptive"]["time_to_target"],
    )
    if base is not None and fast is not None:
        print(f"speedup (non-adaptive / adaptive time to target): {base / fast:.2f}x")
    sent = summaries["adaptive"]["bytes_by_link"]
    slow = [sent[k] for k in ("1mbit", "2mbit") if k in sent]
    quick = [sent[k] for k in ("20mbit", "50mbit") if k in sent]
    if slow and quick:
        fewer = max(slow) < min(quick)
        print(f"slow links (1-2 Mbit/s) send fewer bytes per update than 20-50 Mbit/s: {fewer}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--t-budget", type=float, default=3.0)
    parser.add_argument("--round-timeout", type=float, default=30.0)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="adaptive-wall-") as tmp:
        try:
            return asyncio.run(study(args, Path(tmp)))
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
