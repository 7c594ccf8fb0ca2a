"""Time to accuracy of the selection policies on two fleets, adaptive training off and on.

One job definition (Fashion-MNIST split Dirichlet(0.5) non-IID, virtual clock, real
mosquitto, every fleet member an emulated agent training for real, the coordinator
evaluating on the official 10k test set after every round) is run on two fleets:

* ``flash``: the FLASH-derived fleet (real availability replay of 710 phones, AI-Benchmark
  compute, MobiPerf links), 1.5 M parameters charged: transfers dominate;
* ``fedscale``: a FedScale-style fleet (fedbus/fleet/fedscale_style.py: measured on-device
  latencies with a heavy tail, a 3G/WiFi link mixture, phone-like availability), 1 M
  parameters charged: the median device spends about as long computing as transferring;

with each policy (random, oort, pyramidfl, bliss), in each mode (``off``: fixed local
steps; ``on``: adaptive training against the job's self-pacing budget, error feedback on;
``on-noef``: adaptive without error feedback), for several seeds. Per seed every
configuration shares the job seed (model init, local training, time-model noise) and the
selector seed, so rows differ only by policy and mode. Prints one line per run, then per
fleet two tables (trailing mean of ``--smooth`` evaluations, and raw): virtual hours to
the target (median over seeds; "-" when most seeds never got there), final accuracy (mean
of the last ``--smooth`` evaluations) and its change against ``off``, failed rounds,
speed-ups over random in the same mode and over ``off`` for the same policy. Each run's
directory goes under ``--out/<fleet>`` and ``coordinator report`` draws the plots and
summary.md there.

    python bench/time_to_accuracy.py --data DIR          # the study (2 x 60 runs)
    python bench/time_to_accuracy.py --data DIR --quick  # oort and random, 1 seed, minutes

``DIR`` holds Fashion-MNIST's IDX files (Debian: dataset-fashion-mnist; ``dpkg -x`` of its
.deb works without installing). Sizing: 1,000 clients, K = 20 of floor(1.3 K), 30 rounds,
5 local steps x batch 10, lr 0.05, momentum 0.9, FedProx mu 1, clients_required K/2,
target 75 %; t_budget starts at 10 s (flash) and 60 s (fedscale) and paces itself within
[t/4, 4t]; extra local steps (adaptive training, PyramidFL's idle-time override) at most
2 x the 5 steps (``--max-steps-factor``; the job default is 10, which on these ~50-sample
non-IID clients costs accuracy). Results and what they mean: docs/results/adaptive-study.md.

Anchors (ALGORITHMS.md §6): Oort 1.2x-14.1x over random; Bliss adaptive ~2x over
non-adaptive on FEMNIST / Google Speech; PyramidFL 2.7x-13.7x over Oort.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import REPO, Bench, RunResult, quiet_logs, stop_on_sigterm
from bench.tta_tables import MODES, Row, describe_run, final_accuracy, print_table
from edge_agent.profile import DataSpec
from fedbus.fleet import Fleet
from fedbus.fleet.builders import build_flash
from fedbus.fleet.fedscale_style import build_fedscale_style

POLICIES = ("random", "oort", "pyramidfl", "bliss")
DEFAULT_TRACES = REPO.parent / "shared" / "data" / "traces"
DEFAULT_DATA = {
    "fashion": Path("/usr/share/datasets/fashion-mnist"),  # Debian: dataset-fashion-mnist
    "mnist": REPO.parent / "shared" / "data" / "mnist_5k.csv.gz",
}
# Per fleet: parameters charged on the time model, and the budget adaptive rounds start at.
FLEETS: dict[str, tuple[int, float]] = {"flash": (1_500_000, 10.0), "fedscale": (1_000_000, 60.0)}


@dataclass(frozen=True)
class Study:
    fleet: str
    clients: int
    fleet_seed: int
    k: int
    overcommitment: float
    rounds: int
    eval_interval: int
    local_steps: int
    batch_size: int
    learning_rate: float
    alpha: float
    time_model_params: int
    t_budget: float
    proximal_mu: float
    target: float
    data: str
    max_steps_factor: int = 10
    dataset: str = "fashion"

    @property
    def data_spec(self) -> DataSpec:
        """The data entry point and arguments: one split for every run (part of the fleet)."""
        args = {"path": self.data, "num_partitions": self.clients, "alpha": self.alpha, "seed": 0}
        return DataSpec(f"fedbus.examples.{self.dataset}:load_partition", args)

    def build_fleet(self, traces: str) -> Fleet:
        if self.fleet == "flash":
            return build_flash(traces, self.clients, seed=self.fleet_seed)
        return build_fedscale_style(
            traces, self.clients, seed=self.fleet_seed, charged_params=self.time_model_params
        )

    def job(self, bench: Bench, policy: str, mode: str, seed: int) -> dict[str, Any]:
        spec = self.data_spec
        adaptive, error_feedback = MODES[mode]
        return bench.job(
            name=f"tta-{self.fleet}-{policy}-{mode}-s{seed}",
            model=f"fedbus.examples.{self.dataset}:make_model",
            data=spec.data,
            data_args=dict(spec.data_args),
            # Server-side evaluation on one fixed test set (Fashion-MNIST's official 10k;
            # MNIST-5k's union of held-out splits): the same samples for every run and
            # every round, no agent's time, so it can run after every round.
            test_data=f"fedbus.examples.{self.dataset}:load_test",
            test_data_args=dict(spec.data_args),
            seed=seed,
            rounds=self.rounds,
            num_participants=self.k,
            overcommitment=self.overcommitment,
            # Half of K must come back for a round to count: the budget pacer widens the
            # budget when fewer fit, and tightens it while K do.
            clients_required=max(1, self.k // 2),
            min_agents=self.clients,
            agent_wait_timeout=120,
            round_timeout=300,
            eval_timeout=300,
            local_steps=self.local_steps,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            proximal_mu=self.proximal_mu,
            eval_interval=self.eval_interval,
            selector=selector_for(policy, adaptive, seed),
            adaptive_training=adaptive,
            error_feedback=error_feedback,
            t_budget=self.t_budget,
            max_steps_factor=self.max_steps_factor,
            time_model_params=self.time_model_params,
        )


def selector_for(policy: str, adaptive: bool, seed: int) -> dict[str, Any]:
    """The policy with its default knobs (Oort's are FedScale's), and one exception.

    PyramidFL with adaptive training: its idle-time step override is switched off. The
    budget planner already turns idle time into steps (within the same learner cap), so
    with both on a client's idle time would be spent twice. Its dropout stays on.
    Bliss's pacer starts from the job's t_budget (the coordinator fills its knob).
    """
    selector: dict[str, Any] = {"name": policy, "seed": seed}
    if policy == "pyramidfl" and adaptive:
        selector["enable_adapt_local_epoch"] = False
    return selector


def call_report(run_dirs: list[Path], out: Path, target: float) -> None:
    if importlib.util.find_spec("coordinator.report") is None:
        print("(coordinator.report is not there yet: no plots)")
        return
    from coordinator import report  # type: ignore[attr-defined]

    argv = [*map(str, run_dirs), "--out", str(out), "--target", str(target), "--baseline", "random"]
    try:
        report.main(argv)
        print(f"report written to {out}")
    except Exception as exc:  # the report is a convenience; the table above is the result
        print(f"coordinator report failed: {exc!r}")


async def run_fleet(
    args: argparse.Namespace, study: Study, deadline: float
) -> dict[tuple[str, str], list[RunResult]]:
    """Every (seed, policy, mode) of one fleet that fits before ``deadline`` (monotonic)."""
    fleet = study.build_fleet(args.traces)
    out = Path(args.out) / study.fleet
    out.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, str], list[RunResult]] = {}
    async with Bench(fleet, out / "_bench", data=study.data_spec) as bench:
        print(f"[{study.fleet}] {study.clients} agents connected in {bench.connect_s:.1f} s")
        plan = [
            (seed, policy, mode)
            for seed in args.seed_list  # seed-major: a cut-short study has whole seeds
            for policy in args.policy_list
            for mode in args.mode_list
        ]
        longest = 0.0
        for i, (seed, policy, mode) in enumerate(plan):
            if time.monotonic() + 1.2 * longest > deadline:
                print(f"[{study.fleet}] stopping: time is up, {len(plan) - i} runs left undone")
                break
            job = study.job(bench, policy, mode, seed)
            run = await bench.run_job(job, out, reuse=args.reuse)
            longest = max(longest, run.wall_s)
            results.setdefault((policy, mode), []).append(run)
            print(describe_run(run, study.target), flush=True)
    return results


def report_fleet(
    args: argparse.Namespace, study: Study, results: dict[tuple[str, str], list[RunResult]]
) -> None:
    keys = [(p, m) for p in args.policy_list for m in args.mode_list if (p, m) in results]
    out = Path(args.out) / study.fleet
    summary = {
        "study": study.__dict__,
        "seeds": args.seed_list,
        "runs": {
            r.name: {
                "policy": p,
                "mode": m,
                "time_to_target_s": r.time_to(study.target),
                "time_to_target_smoothed_s": r.time_to(study.target, args.smooth),
                "round_to_target": r.round_to(study.target),
                "final_accuracy": r.final_accuracy,
                "final_accuracy_smoothed": final_accuracy(r, args.smooth),
                "rounds": r.rounds,
                "failed_rounds": r.failed_rounds,
                "virtual_s": r.virtual_time,
                "wall_s": r.wall_s,
                "points": [p_.__dict__ for p_ in r.points],
            }
            for (p, m) in keys
            for r in results[(p, m)]
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    title = f"{study.fleet} fleet"
    if args.smooth > 1:
        rows = [Row(p, m, results[(p, m)], study.target, args.smooth) for p, m in keys]
        print_table(title, rows, study.target)
    print_table(title, [Row(p, m, results[(p, m)], study.target) for p, m in keys], study.target)
    # The report groups runs by selector and adaptive on/off: the error-feedback-off runs
    # would fall into the same groups, so the plots show modes 'off' and 'on' only.
    run_dirs = sorted(
        p
        for p in out.iterdir()
        if (p / "events.jsonl").exists()
        and "-noef-" not in p.name
        and any(p.name == f"{r.name}" for runs in results.values() for r in runs)
    )
    call_report(run_dirs, out / "report", study.target)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", default=str(DEFAULT_TRACES), help="shared/data/traces")
    parser.add_argument("--fleets", default="flash,fedscale", help="flash, fedscale or both")
    parser.add_argument("--dataset", choices=sorted(DEFAULT_DATA), default="fashion")
    parser.add_argument(
        "--data", default=None, help="the dataset's file or directory (default: its usual place)"
    )
    parser.add_argument("--out", default="runs/tta", help="run directories go here")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--fleet-seed", type=int, default=1)
    parser.add_argument("--k", type=int, default=20, help="participants kept per round")
    parser.add_argument("--overcommitment", type=float, default=1.3)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--eval-interval", type=int, default=1)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew")
    parser.add_argument("--time-model-params", type=int, default=None, help="per fleet if unset")
    parser.add_argument("--t-budget", type=float, default=None, help="per fleet if unset")
    parser.add_argument(
        "--proximal-mu", type=float, default=1.0, help="FedProx mu (0: FedAvg's plain SGD)"
    )
    parser.add_argument(
        "--max-steps-factor",
        type=int,
        default=2,
        help="adaptive training: at most this many times --local-steps per round (job"
        " default 10; see docs/results/adaptive-study.md)",
    )
    parser.add_argument("--target", type=float, default=0.75)
    parser.add_argument(
        "--smooth",
        type=int,
        default=5,
        help="also tabulate time to target on the trailing mean of this many evaluations",
    )
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument(
        "--modes", default="off,on,on-noef", help=f"training modes, of {', '.join(MODES)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="random and oort, off and on, one seed, 25 rounds"
    )
    parser.add_argument("--reuse", action="store_true", help="read back finished run dirs")
    parser.add_argument(
        "--max-minutes", type=float, default=85.0, help="start no run that would end later"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.policies, args.modes = "1", "random,oort", "off,on"
        args.rounds = min(args.rounds, 25)
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    args.policy_list = [p for p in args.policies.split(",") if p]
    args.mode_list = [m for m in args.modes.split(",") if m]
    fleets = [f for f in args.fleets.split(",") if f]
    for name, known, what in (
        *((m, MODES, "mode") for m in args.mode_list),
        *((f, FLEETS, "fleet") for f in fleets),
    ):
        if name not in known:
            parser.error(f"unknown {what} {name!r} (choose from {', '.join(known)})")
    args.data = args.data or str(DEFAULT_DATA[args.dataset])
    for path in (args.traces, args.data):
        if not Path(path).exists():
            parser.error(f"{path} does not exist")
    base = Study(
        fleet="flash",
        clients=args.clients,
        fleet_seed=args.fleet_seed,
        k=args.k,
        overcommitment=args.overcommitment,
        rounds=args.rounds,
        eval_interval=args.eval_interval,
        local_steps=args.local_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        alpha=args.alpha,
        time_model_params=0,
        t_budget=0.0,
        proximal_mu=args.proximal_mu,
        target=args.target,
        max_steps_factor=args.max_steps_factor,
        data=str(Path(args.data).resolve()),
        dataset=args.dataset,
    )
    quiet_logs()
    stop_on_sigterm()
    began = time.monotonic()
    deadline = began + args.max_minutes * 60
    studies = []
    for name in fleets:
        params, budget = FLEETS[name]
        studies.append(
            replace(
                base,
                fleet=name,
                time_model_params=args.time_model_params or params,
                t_budget=args.t_budget or budget,
            )
        )
    print(
        f"job: {base.dataset} Dirichlet({base.alpha}), 784-128-10 MLP, K={base.k} of"
        f" floor({base.k}*{base.overcommitment}), {base.rounds} rounds, {base.local_steps}"
        f" local steps x batch {base.batch_size}, lr {base.learning_rate}, FedProx mu"
        f" {base.proximal_mu}, extra steps at most {base.max_steps_factor}x, server-side"
        f" evaluation every {base.eval_interval} round(s)\n"
        f"fleets: "
        + "; ".join(
            f"{s.fleet} ({s.clients} clients, seed {s.fleet_seed}, {s.time_model_params:,}"
            f" params charged, t_budget from {s.t_budget:.0f} s)"
            for s in studies
        )
        + f"\nseeds {args.seed_list}; policies {args.policy_list}; modes {args.mode_list}",
        flush=True,
    )
    done = []
    for i, study in enumerate(studies):
        # Each fleet gets an equal share of what is left of --max-minutes.
        share = (deadline - time.monotonic()) / (len(studies) - i)
        done.append((study, asyncio.run(run_fleet(args, study, time.monotonic() + share))))
    print(f"study wall time {time.monotonic() - began:.0f} s")
    for study, results in done:
        report_fleet(args, study, results)


if __name__ == "__main__":
    main()
