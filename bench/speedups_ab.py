"""Do the paho speed-ups pay? The same benchmarks with each set of patches, in one run.

    .venv/bin/python bench/speedups_ab.py [--settings on,decoders,off] [--reps 2]
                                          [--agents 10] [--rounds 4] [--sizes 10]
                                          [--trees ../wt-old]

Runs, for every rep and every setting of ``FEDBUS_PAHO_SPEEDUPS`` in turn (interleaved, so
drift in the machine's load falls on every setting alike):

ingest     ``bench/ingest.py --phases replay``: N publishers x 44 MB into the coordinator;
           the median updates/s (first byte -> aggregated model) and the loop's worst lag.
vs_flower  ``bench/vs_flower.py --engines fedbus``: the digits job on ``coordinator run`` +
           N ``edge-agent run``; the median per-round time (rounds 2..R).

Every process of a run (coordinator, agents, publishers) uses the setting. Prints each
run's figures, then per setting the median over reps and the change against the first
setting. A patch pays when switching it off costs more than the spread between reps.
``--trees`` adds other checkouts (git worktrees of older commits, say one with a patch that
was dropped): each runs the first setting in the same interleaving, on this venv.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

Arm = tuple[Path, str]

REPO = Path(__file__).resolve().parent.parent
INGEST_RATE = re.compile(r"^  median: ([\d.]+) updates/s", re.M)
INGEST_LAG = re.compile(r"loop lag while updates stream in: max (\d+) ms")
# The coordinator loop's own CPU per round: what a patch saves, less blurred by other load.
INGEST_CPU = re.compile(r"loop thread: on a CPU ([\d.]+) s")
ROUND = re.compile(r"\] fedbus: [\d.]+ s, per-round ([\d.]+) (ms|s)")


def run(argv: list[str], setting: str, tree: Path = REPO) -> str:
    # PYTHONPATH puts another checkout's packages ahead of this venv's editable install
    # (setuptools appends its editable finder after the path finder).
    env = {**os.environ, "FEDBUS_PAHO_SPEEDUPS": setting, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, *argv], env=env, cwd=tree, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
    return done.stdout


def ingest(
    setting: str, agents: int, rounds: int, tree: Path = REPO
) -> tuple[float | None, float | None, float | None]:
    argv = ["bench/ingest.py", "--phases", "replay", "--agents", str(agents)]
    out = run([*argv, "--rounds", str(rounds)], setting, tree)
    rate, lag = INGEST_RATE.search(out), INGEST_LAG.search(out)
    cpu = [float(c) for c in INGEST_CPU.findall(out)]
    return (
        float(rate[1]) if rate else None,
        float(lag[1]) if lag else None,
        statistics.median(cpu) if cpu else None,
    )


def per_round(setting: str, size: int, rounds: int, tree: Path = REPO) -> float | None:
    argv = ["bench/vs_flower.py", "--engines", "fedbus", "--sizes", str(size)]
    found = ROUND.search(run([*argv, "--rounds", str(rounds)], setting, tree))
    if found is None:
        return None
    return float(found[1]) / (1000.0 if found[2] == "ms" else 1.0)


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def change(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return "-"
    return f"{100 * (value / base - 1):+.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", default="on,decoders,off", help="separated by ';' or ','")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--agents", type=int, default=10, help="ingest publishers")
    parser.add_argument("--rounds", type=int, default=4, help="ingest rounds")
    parser.add_argument("--sizes", type=int, default=10, help="vs_flower agents")
    parser.add_argument("--flower-rounds", type=int, default=10)
    parser.add_argument("--benches", default="ingest,vs_flower")
    parser.add_argument(
        "--trees",
        default="",
        help="other checkouts (e.g. git worktrees of older commits) run beside this one, "
        "each with the first setting; ',' separated",
    )
    args = parser.parse_args()
    sep = ";" if ";" in args.settings else ","
    settings = [s.strip() for s in args.settings.split(sep) if s.strip()]
    benches = set(args.benches.split(","))
    others = [Path(t).resolve() for t in args.trees.split(",") if t.strip()]
    arms = [(REPO, setting) for setting in settings] + [(tree, settings[0]) for tree in others]
    names = {arm: f"{describe(arm[0])}:{arm[1]}" for arm in arms}
    print(f"{os.cpu_count()} cores; arms {list(names.values())}, {args.reps} reps")
    rates: dict[Arm, list[float | None]] = {arm: [] for arm in arms}
    lags: dict[Arm, list[float | None]] = {arm: [] for arm in arms}
    cpus: dict[Arm, list[float | None]] = {arm: [] for arm in arms}
    rounds: dict[Arm, list[float | None]] = {arm: [] for arm in arms}
    width = max(len(name) for name in names.values())
    for rep in range(args.reps):
        for arm in arms:
            tree, setting = arm
            line = f"rep {rep} {names[arm]:<{width}}"
            if "ingest" in benches:
                rate, lag, cpu = ingest(setting, args.agents, args.rounds, tree)
                rates[arm].append(rate)
                lags[arm].append(lag)
                cpus[arm].append(cpu)
                line += f" ingest {rate} updates/s, lag max {lag} ms, loop CPU {cpu} s/round;"
            if "vs_flower" in benches:
                rounds[arm].append(per_round(setting, args.sizes, args.flower_rounds, tree))
                line += f" per-round {rounds[arm][-1]} s"
            print(line, flush=True)
    base = arms[0]
    print(f"\nmedians over {args.reps} reps (change against {names[base]}):")
    for arm in arms:
        rate, lag, rnd = median(rates[arm]), median(lags[arm]), median(rounds[arm])
        cpu = median(cpus[arm])
        print(
            f"  {names[arm]:<{width}} ingest {rate} updates/s ({change(rate, median(rates[base]))}),"
            f" lag max {lag} ms, loop CPU {cpu} s/round ({change(cpu, median(cpus[base]))});"
            f" per-round {rnd} s ({change(rnd, median(rounds[base]))})"
        )


def describe(tree: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(tree), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()


if __name__ == "__main__":
    main()
