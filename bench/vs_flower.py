"""The same FedAvg job on Flower and on fedbus, side by side, in one run on this machine.

    .venv/bin/python bench/vs_flower.py [--sizes 10,50] [--rounds 10] [--engines ...]
    .venv/bin/python bench/vs_flower.py --setup-flower      # make .venv-flower first

The job, identical on every engine: scikit-learn's digits, the MLP of
``fedbus/examples/digits.py`` (64-128-10), ``fedbus.examples.digits.load_partition`` (Dirichlet(0.5)
label skew over N partitions, seed 0; each client holds out 20 % of its partition),
initial weights ``torch.manual_seed(seed); make_model()``, every client in every round
(fedbus: ``num_participants: N``, ``overcommitment: 1.0``, ``clients_required: N``;
Flower: ``fraction_train = 1.0``, ``min_train_nodes = N``), ``local_steps`` SGD steps of
``batch_size`` with a fresh optimizer per round (lr, momentum), the per-round training
seed ``seed * 1_000_003 + round * 7919 + partition`` (fedbus's; Flower's client does the
same in ``bench/flower_side.py``), FedAvg weighted by training examples, and federated
evaluation of the new global model on every client's held-out split after every round,
weighted by test examples (fedbus ``eval_interval: 1``; Flower ``fraction_evaluate 1.0``).
One torch thread per client everywhere.

Engines (``--engines``, all by default):

flower-sim      Flower's simulation engine (``run_simulation``, Ray, 1 CPU per actor).
flower-deploy   Flower's deployment engine on loopback: ``flower-superlink``, N
                ``flower-supernode`` processes (registered before the run starts),
                ``flwr run``. Given ``--deploy-timeout`` seconds per N.
fedbus          mosquitto + ``coordinator run`` + N ``edge-agent run --threads 1``
                processes, as ``fedbus/examples/demo.py`` starts them. The agents are started
                and seen online (retained status) before the coordinator starts.
fedbus-emulate  the same coordinator with the N agents emulated in ``--emulators``
                ``edge-agent emulate`` processes (default 1; ``--count``/``--offset`` split
                a synthetic "lab" fleet, always on, wall clock): N MQTT connections, one
                torch runtime per process, training one at a time within a process.

Both fedbus engines start from a seed file (``coordinator seed``, run and timed before
the agents start: ``seed_build_s``; the job's ``initial_model``), so the coordinator does
not import torch; ``--no-seed`` builds the weights from the model's code at start
instead, as Flower's server app does (the weights are the same either way).

Figures per engine: per-round time (median over rounds 2..R of the time from one round's
start to the next's, training and evaluation included; round 1 shown apart, it carries
the engines' warm-up), the training phase alone (round start to aggregated model),
time to first task (launch of the server side to the first task reaching a client;
fedbus: ``coordinator run`` launched with the agents already connected -> the first task
message seen by a subscriber on the broker; Flower sim: the process launch -> the first
client ``train`` call; Flower deploy: ``flwr run`` with the SuperNodes registered -> the
first ``train`` call), total time (launch -> exit of the server side), final accuracy.
Also the machine's floor: this process trains and evaluates all N clients of one round
with the same code (``edge_agent.trainer.LocalTrainer``) back to back; divided by the
cores, that is what a round cannot go below on this machine.

Ratios are fedbus / Flower from this run. Targets (issue): fedbus per-round <= 1/4 of
the simulation engine and <= 1/100 of the deployment engine, at N = 10 and N = 50;
coordinator start -> first task <= 2 s with agents connected.

Setting up Flower (a separate venv so the project's stays clean; ``--setup-flower`` does
exactly this)::

    python3 -m venv .venv-flower
    .venv-flower/bin/pip install torch==2.13.0        # the CPU wheel on this machine's disk
    .venv-flower/bin/pip install "flwr[simulation]==1.41.*" scikit-learn

(flwr 1.42.0 is on the index but not installable here: it requires certifi>=2026.10.19,
which the index does not have; 1.41.0 is the newest that installs.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.vs_flower_common import CHILD_ENV, Job, Result, loadavg  # noqa: E402
from bench.vs_flower_fedbus import _stop, job_yaml, run_fedbus, wait_online  # noqa: E402

# Names other benches import from here (bench/round_cpu.py).
__all__ = ["CHILD_ENV", "Job", "Result", "_stop", "job_yaml", "run_fedbus", "wait_online"]

FLOWER_VENV = REPO / ".venv-flower"
FLOWER_SPEC = "flwr[simulation]==1.41.*"
ENGINES = ("flower-sim", "flower-deploy", "fedbus", "fedbus-emulate")


def setup_flower() -> None:
    py = FLOWER_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(FLOWER_VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, FLOWER_SPEC, "scikit-learn"], check=True)
    subprocess.run([str(py), "-c", "import flwr; print('flwr', flwr.__version__)"], check=True)


def flower_version() -> str | None:
    py = FLOWER_VENV / "bin" / "python"
    if not py.exists():
        return None
    out = subprocess.run(
        [str(py), "-c", "import flwr; print(flwr.__version__)"],
        capture_output=True,
        text=True,
        env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"},
    )
    return out.stdout.strip() or None


def run_flower(job: Job, mode: str, work: Path, deploy_timeout: float) -> Result:
    engine = f"flower-{mode}"
    work.mkdir(parents=True, exist_ok=True)
    timing = work / "timing.jsonl"
    timing.unlink(missing_ok=True)
    spec = {
        "num_clients": job.n,
        "rounds": job.rounds,
        "local_steps": job.local_steps,
        "batch_size": job.batch_size,
        "lr": job.lr,
        "momentum": job.momentum,
        "seed": job.seed,
        "alpha": job.alpha,
        "data_seed": job.seed,
        "timing_file": str(timing),
    }
    (work / "job.json").write_text(json.dumps(spec))
    out = work / "result.json"
    out.unlink(missing_ok=True)
    argv = [
        str(FLOWER_VENV / "bin" / "python"),
        str(REPO / "bench" / "flower_side.py"),
        mode,
        "--job",
        str(work / "job.json"),
        "--out",
        str(out),
        "--work",
        str(work / "deploy"),
        "--timeout",
        str(deploy_timeout),
    ]
    env = {**os.environ, **CHILD_ENV, "FLWR_TELEMETRY_ENABLED": "0", "FEDBUS_REPO": str(REPO)}
    launched = time.time()
    with (work / "flower.log").open("wb") as log:
        proc = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    ended = time.time()
    result = Result(engine)
    if proc.returncode != 0 or not out.exists():
        result.ok = False
        result.note = f"exit {proc.returncode}; see {work / 'flower.log'}"
    info = json.loads(out.read_text()) if out.exists() else {}
    events = (
        [json.loads(line) for line in timing.read_text().splitlines()] if timing.exists() else []
    )
    starts = {e["round"]: e["t"] for e in events if e["ev"] == "round_start"}
    trains = {e["round"]: e["t"] for e in events if e["ev"] == "train_end"}
    ends = {e["round"]: e for e in events if e["ev"] == "round_end"}
    fits = sorted(e["t"] for e in events if e["ev"] == "fit")
    done = sorted(ends)
    for r in done:
        nxt = starts.get(r + 1, ends[r]["t"])
        result.rounds.append(nxt - starts[r])
        result.train_phase.append(trains[r] - starts[r])
    if done:
        result.accuracy = ends[done[-1]]["accuracy"]
    result.extra["rounds_done"] = len(done)
    if mode == "sim":
        result.total_s = ended - launched
        result.first_task_s = fits[0] - launched if fits else None
        server = [e["t"] for e in events if e["ev"] == "server_start"]
        if server:
            result.extra["launch_to_server_s"] = server[0] - launched
    else:
        began = info.get("run_began")
        result.extra["nodes_ready_s"] = info.get("nodes_ready_s")
        result.extra["nodes_seen"] = info.get("nodes_seen")
        if began is not None:
            result.first_task_s = fits[0] - began if fits else None
            last = ends[done[-1]]["t"] if done else info.get("run_ended", ended)
            result.total_s = last - began
        if info.get("timed_out"):
            result.ok = False
            ran = info.get("run_ended", ended) - (began or launched)
            if info.get("flwr_run_rc") is None:
                result.note = (
                    f"did not finish in {deploy_timeout:.0f} s ({len(done)} of {job.rounds} rounds)"
                )
            else:
                result.note = (
                    f"`flwr run` ended after {ran:.0f} s with {len(done)} of {job.rounds} rounds "
                    f"done (exit {info['flwr_run_rc']}); see {work / 'deploy' / 'logs'}"
                )
    return result


# ---------------------------------------------------------------------------- fedbus


def machine_floor(job: Job) -> dict[str, float]:
    """One round's training and evaluation of all N clients, back to back, in this process."""
    import torch

    from edge_agent.torch_state import state_to_numpy
    from edge_agent.trainer import LocalTrainer
    from fedbus.examples.digits import make_model
    from fedbus.protocol.messages import TrainConfig
    from fedbus.protocol.params import ParamLayout

    torch.set_num_threads(1)
    torch.manual_seed(job.seed)
    tensors = state_to_numpy(make_model())
    layout = ParamLayout.from_tensors(tensors)
    config = TrainConfig(
        model="fedbus.examples.digits:make_model",
        data="fedbus.examples.digits:load_partition",
        data_args={"num_partitions": job.n, "alpha": job.alpha, "seed": job.seed},
        local_steps=job.local_steps,
        batch_size=job.batch_size,
        learning_rate=job.lr,
        momentum=job.momentum,
        seed=job.seed,
    )
    trainer = LocalTrainer("cpu")
    for p in range(job.n):  # load data and warm up, as a running client has
        trainer.partition(config, p)
    trainer.train(config, 0, tensors, layout, seed=0)
    best_train = best_eval = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for p in range(job.n):
            trainer.train(config, p, tensors, layout, seed=p)
        t1 = time.perf_counter()
        for p in range(job.n):
            trainer.evaluate(config, p, tensors)
        t2 = time.perf_counter()
        best_train, best_eval = min(best_train, t1 - t0), min(best_eval, t2 - t1)
    cores = os.cpu_count() or 1
    return {
        "train_serial_s": best_train,
        "eval_serial_s": best_eval,
        "floor_s": (best_train + best_eval) / min(cores, job.n),
    }


# ---------------------------------------------------------------------------- report
def fmt(x: float | None, unit: str = "s", digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f} {unit}".strip()


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.3f}"


def report(job: Job, results: dict[str, Result], floor: dict[str, float]) -> None:
    print(f"\n=== N = {job.n}: {job.describe()}")
    print(
        f"machine floor per round (all {job.n} clients' training "
        f"{floor['train_serial_s'] * 1e3:.0f} ms + evaluation {floor['eval_serial_s'] * 1e3:.0f} ms "
        f"back to back, / {min(os.cpu_count() or 1, job.n)} cores): {floor['floor_s'] * 1e3:.0f} ms"
    )
    head = f"{'engine':<16}{'per-round':>11}{'round 1':>10}{'train':>10}{'1st task':>10}{'total':>10}{'acc':>8}  note"
    print(head)
    for name in ENGINES:
        r = results.get(name)
        if r is None:
            continue
        first_round = r.rounds[0] if r.rounds else None
        print(
            f"{name:<16}{fmt(r.per_round):>11}{fmt(first_round, digits=2):>10}"
            f"{fmt(r.train):>10}{fmt(r.first_task_s, digits=2):>10}{fmt(r.total_s, digits=1):>10}"
            f"{'-' if r.accuracy is None else f'{r.accuracy:.4f}':>8}  {r.note}"
        )
    for name in ENGINES:
        r = results.get(name)
        if r is not None and r.extra:
            extras = ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.extra.items()
            )
            print(f"  {name}: {extras}")
    sim, dep = results.get("flower-sim"), results.get("flower-deploy")
    for name in ("fedbus", "fedbus-emulate"):
        fb = results.get(name)
        if fb is None or fb.per_round is None:
            continue
        if sim is not None and sim.per_round:
            print(
                f"{name} / flower-sim: per-round {ratio(fb.per_round, sim.per_round)} "
                f"(target <= 0.25), train phase {ratio(fb.train, sim.train)}, "
                f"first task {ratio(fb.first_task_s, sim.first_task_s)}, "
                f"total {ratio(fb.total_s, sim.total_s)}"
            )
        if dep is not None and dep.per_round:
            print(
                f"{name} / flower-deploy: per-round {ratio(fb.per_round, dep.per_round)} "
                f"(target <= 0.01), first task {ratio(fb.first_task_s, dep.first_task_s)}, "
                f"total {ratio(fb.total_s, dep.total_s)}"
                + ("" if dep.ok else f" [deploy: {dep.note}]")
            )
        if fb.first_task_s is not None:
            verdict = "met" if fb.first_task_s <= 2.0 else "MISSED"
            print(
                f"{name}: coordinator start -> first task {fb.first_task_s:.2f} s "
                f"with agents connected (target <= 2 s: {verdict})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,50", help="client counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha; 0 = IID")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument(
        "--deploy-timeout", type=float, default=600, help="seconds for one deployment-engine run"
    )
    parser.add_argument(
        "--emulators",
        type=int,
        default=1,
        help="fedbus-emulate: split the N agents over this many `edge-agent emulate` processes",
    )
    parser.add_argument(
        "--no-seed",
        action="store_true",
        help="fedbus: build the initial weights from the model's code at coordinator start "
        "instead of from a seed file made beforehand with `coordinator seed`",
    )
    parser.add_argument("--setup-flower", action="store_true", help="create .venv-flower first")
    parser.add_argument("--work", default=None, help="working directory (default: a temp dir)")
    args = parser.parse_args()

    if args.setup_flower:
        setup_flower()
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}; choose from {ENGINES}")
    version = flower_version()
    if any(e.startswith("flower") for e in engines) and version is None:
        print(f"Flower is not installed in {FLOWER_VENV}: run with --setup-flower; skipping it")
        engines = [e for e in engines if not e.startswith("flower")]
    work = Path(args.work or tempfile.mkdtemp(prefix="fedbus-vsflower-"))
    tree = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"fedbus {tree}, flwr {version}, {os.cpu_count()} cores, load {loadavg()}, work dir {work}"
    )
    for n in [int(s) for s in args.sizes.split(",")]:
        job = Job(
            n,
            args.rounds,
            args.local_steps,
            args.batch_size,
            args.lr,
            args.momentum,
            args.alpha or None,
            args.seed,
        )
        results: dict[str, Result] = {}
        for engine in engines:
            print(f"[N={n}] {engine} ... (load {loadavg()})", flush=True)
            began = time.time()
            where = work / f"n{n}" / engine
            try:
                if engine == "flower-sim":
                    results[engine] = run_flower(job, "sim", where, args.deploy_timeout)
                elif engine == "flower-deploy":
                    results[engine] = run_flower(job, "deploy", where, args.deploy_timeout)
                else:
                    results[engine] = asyncio.run(
                        run_fedbus(
                            job,
                            where,
                            emulate=engine == "fedbus-emulate",
                            emulators=args.emulators,
                            seed=not args.no_seed,
                        )
                    )
            except Exception as exc:  # one engine failing must not hide the others
                results[engine] = Result(engine, ok=False, note=f"{type(exc).__name__}: {exc}")
            r = results[engine]
            print(
                f"[N={n}] {engine}: {time.time() - began:.1f} s, per-round {fmt(r.per_round)}"
                + ("" if r.ok else f" ({r.note})"),
                flush=True,
            )
        report(job, results, machine_floor(job))


if __name__ == "__main__":
    main()
