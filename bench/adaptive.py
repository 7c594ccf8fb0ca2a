"""Adaptive training on and off: virtual time to a target accuracy (issue 5).

The same job on the same fleet, run once with ``adaptive_training: false`` and once per
``--t-budget`` with it on. Everything else is shared and printed with the result: fleet
(FLASH-derived from ``--traces``, or synthetic when there are no traces), data split,
model, selector and its seed, job seed (model init, local training, time-model noise,
validation sample), K and over-commitment, local steps, the parameter count the time
model charges, the target and how accuracy is measured (every agent validates; their
held-out splits together are one fixed test set). The comparison is paired: the only
difference between the runs is the adaptive switch (and the budget).

Prints for each run the virtual time to the target, rounds, final accuracy, median round
length and what adaptive training did (local steps, share of sparse uploads, keep
fraction, failures), then the ratio adaptive / non-adaptive. Issue 5's target: adaptive
reaches the target in at most 0.7x the virtual time of non-adaptive.

    python bench/adaptive.py                               # FLASH fleet, MNIST-5k
    python bench/adaptive.py --traces none --data digits   # no ../shared: synthetic fleet, digits

Measured (seed 1, 2026-11-23): before the planner capped steps at five passes over the local
data, every adaptive agent ran 10x the local steps (50 steps on a ~4-sample partition) and
adaptive lost (t_budget 5 s never reached 80 %, 10 s 0.88x, 20 s 2.12x). With the cap
(``--t-budget 5,10``): non-adaptive 3.35 virtual min to 80 %; adaptive 5 s 1.50 min = 0.45x,
10 s 2.41 min = 0.72x. Rounds here are transfer-bound (6 MB each way, compute ~ms), so the
budget pays off only where it binds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    HOUR,
    REPO,
    Bench,
    RunResult,
    fmt_hours,
    median_or_none,
    quiet_logs,
    stop_on_sigterm,
)
from fedbus.fleet import Fleet
from fedbus.fleet.builders import build_flash, build_synthetic

DEFAULT_TRACES = REPO.parent / "shared" / "data" / "traces"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist_5k.csv.gz"
TARGET_RATIO = 0.7


def build_fleet(traces: str, clients: int, seed: int) -> tuple[Fleet, str]:
    if traces != "none" and Path(traces).is_dir():
        return build_flash(traces, clients, seed), f"FLASH-derived from {traces}"
    return build_synthetic(clients, seed, "mobile"), "synthetic (mobile availability)"


def data_entry(data: str, clients: int) -> tuple[str, str, dict[str, Any], str]:
    if data != "digits" and Path(data).exists():
        args: dict[str, Any] = {"path": str(Path(data).resolve()), "num_partitions": clients}
        return "fedbus.examples.mnist:make_model", "fedbus.examples.mnist:load_partition", args, "MNIST-5k"
    args = {"num_partitions": clients}
    return "fedbus.examples.digits:make_model", "fedbus.examples.digits:load_partition", args, "digits"


def adaptive_stats(run: RunResult) -> dict[str, float]:
    """Median local steps and keep fraction of the kept updates, sparse share, failures."""
    steps: list[float] = []
    keeps: list[float] = []
    failed = dispatched = 0
    for e in run.events:
        if e["event"] == "ROUND_END":
            steps += [float(s) for s in e["data"].get("steps", {}).values()]
            keeps += [float(k) for k in e["data"].get("keep_frac", {}).values()]
            failed += len(e["data"].get("failed", []))
        elif e["event"] == "ROUND_BEGIN":
            dispatched += len(e["data"]["dispatched"])
    return {
        "steps": statistics.median(steps) if steps else 0.0,
        "keep": statistics.median(keeps) if keeps else 1.0,
        "sparse": sum(k < 1.0 for k in keeps) / len(keeps) if keeps else 0.0,
        "failed": failed / dispatched if dispatched else 0.0,
    }


def describe(label: str, runs: list[RunResult], target: float) -> str:
    tta = median_or_none([r.time_to(target) for r in runs])
    rounds = median_or_none([_f(r.round_to(target)) for r in runs])
    finals = [r.final_accuracy or 0.0 for r in runs]
    round_s = statistics.median(statistics.median(r.round_durations() or [0.0]) for r in runs)
    stats = [adaptive_stats(r) for r in runs]
    st = {k: statistics.median(s[k] for s in stats) for k in stats[0]}
    return (
        f"{label:<22} to {target:.0%}: {fmt_hours(tta):>6} h"
        f" (round {'-' if rounds is None else f'{rounds:.0f}'})"
        f"  final {statistics.median(finals):.3f}  median round {round_s:5.1f} s"
        f"  steps {st['steps']:.0f}  sparse {st['sparse']:.0%} (keep {st['keep']:.2f})"
        f"  failed {st['failed']:.0%}  wall {statistics.median(r.wall_s for r in runs):.0f} s"
    )


def _f(x: int | None) -> float | None:
    return None if x is None else float(x)


async def run(args: argparse.Namespace) -> None:
    fleet, fleet_desc = build_fleet(args.traces, args.clients, args.fleet_seed)
    model, data, data_args, data_desc = data_entry(args.data, args.clients)
    data_args = {**data_args, "alpha": args.alpha, "seed": 0}
    budgets = [float(b) for b in args.t_budget.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"fleet: {args.clients} clients, {fleet_desc}, seed {args.fleet_seed}\n"
        f"data: {data_desc} Dirichlet({args.alpha}) over {args.clients} agents, each validates"
        f" on its held-out 20 % (together one fixed test set)\n"
        f"job: {model.split(':')[0]} model, K={args.k} of floor({args.k}*{args.overcommitment}),"
        f" {args.rounds} rounds, {args.local_steps} local steps x batch {args.batch_size},"
        f" lr {args.learning_rate}, eval every {args.eval_interval} rounds,"
        f" selector {args.selector} (seed = job seed), seeds {seeds}\n"
        f"time model: {args.time_model_params:,} params charged (download + upload"
        f" {args.time_model_params * 8 / 1e6:.0f} MB dense); adaptive budgets {budgets} s;"
        f" target {args.target:.0%}",
        flush=True,
    )
    out = Path(args.out)
    results: dict[str, list[RunResult]] = {}
    async with Bench(fleet, out / "_bench") as bench:
        for seed in seeds:
            for budget in [None, *budgets]:
                label = "non-adaptive" if budget is None else f"adaptive t_budget={budget:g}s"
                selector: dict[str, Any] = {"name": args.selector, "seed": seed}
                if args.selector == "bliss":
                    selector["t_budget"] = budget or budgets[0]  # Bliss's knob wins otherwise
                job = bench.job(
                    name=f"adaptive-{'off' if budget is None else f'b{budget:g}'}-s{seed}",
                    model=model,
                    data=data,
                    data_args=data_args,
                    seed=seed,
                    rounds=args.rounds,
                    num_participants=args.k,
                    overcommitment=args.overcommitment,
                    min_agents=args.clients,
                    round_timeout=300,
                    eval_timeout=300,
                    local_steps=args.local_steps,
                    batch_size=args.batch_size,
                    learning_rate=args.learning_rate,
                    eval_interval=args.eval_interval,
                    eval_max_clients=args.clients,
                    selector=selector,
                    adaptive_training=budget is not None,
                    t_budget=budget or budgets[0],
                    time_model_params=args.time_model_params,
                )
                result = await bench.run_job(job, out, reuse=args.reuse)
                results.setdefault(label, []).append(result)
                curve = " ".join(f"{p.accuracy:.2f}" for p in result.points)
                print(
                    f"  seed {seed} {label}: {result.rounds} rounds in"
                    f" {result.virtual_time / HOUR:.3f} virtual h, wall {result.wall_s:.0f} s [{curve}]",
                    flush=True,
                )
    print()
    for label, runs in results.items():
        print(describe(label, runs, args.target))
    base = median_or_none([r.time_to(args.target) for r in results["non-adaptive"]])
    for label, runs in results.items():
        if label == "non-adaptive":
            continue
        tta = median_or_none([r.time_to(args.target) for r in runs])
        if base is None or tta is None:
            verdict = "n/a: a run did not reach the target"
            ratio = "-"
        else:
            ratio = f"{tta / base:.2f}x"
            ok = tta <= TARGET_RATIO * base
            verdict = f"{'meets' if ok else 'misses'} the issue's <= {TARGET_RATIO}x"
        print(
            f"{label}: virtual time to {args.target:.0%} = {ratio} of non-adaptive"
            f" ({fmt_hours(tta)} h vs {fmt_hours(base)} h) -> {verdict}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", default=str(DEFAULT_TRACES), help="traces dir, or 'none'")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="mnist_5k.csv.gz or 'digits'")
    parser.add_argument("--out", default="runs/adaptive")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--fleet-seed", type=int, default=1)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--overcommitment", type=float, default=1.3)
    parser.add_argument("--rounds", type=int, default=45)
    parser.add_argument("--eval-interval", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--selector", default="random")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--time-model-params", type=int, default=1_500_000)
    parser.add_argument(
        "--t-budget", default="5,10,20", help="one or more budgets, comma-separated"
    )
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--reuse", action="store_true", help="read back finished run dirs")
    args = parser.parse_args(argv)
    if (args.data == "digits" or not Path(args.data).exists()) and args.clients > 200:
        args.clients = 200  # 1,797 digits: ~9 samples per agent at 200
    quiet_logs()
    stop_on_sigterm()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
