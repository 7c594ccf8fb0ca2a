"""Many jobs on one pool, Propius-style, on the virtual clock: JCT, makespan, decision latency.

Eight jobs of different sizes and requirements arrive over time on a 1,000-device
emulated fleet (``fedbus.fleet`` synthetic phones, always online: the ``lab``
availability). For each scheduling policy (fifo, srsf, random, scarcity) the bench runs
the jobs side by side, and once more one after another (each job alone on the whole
pool, in arrival order), and prints per policy the average job completion time (JCT:
end minus arrival), the makespan and the scheduler's decision latency.

What is real and what is not. Driving eight real jobs over 1,000 emulated MQTT agents is
far too slow for a shared two-core machine, so the pool is simulated on the virtual
clock: the real :class:`coordinator.scheduler.Scheduler` decides every grant and hold,
each job's real selector (``client_selectors``: random, Oort) picks within its grant, and
the fleet time model (``fedbus.fleet.virtual_round.simulate_round``) gives every
dispatched device its round time; as in ``coordinator serve`` on the virtual clock, a
non-adaptive round dispatches the K fastest of the over-committed sample and lasts as
long as the slowest of them. No model is trained: Oort's utility is a seeded stand-in
(samples x a lognormal draw). ``tests/integration/test_scheduling.py`` runs the same
scheduler inside ``coordinator serve`` on a real broker.

Then the scheduler alone at Propius's scale: decision latency at 10,000 agents and 20
jobs (target <= 10 ms per decision).

    .venv/bin/python bench/multi_job.py [--png multi_job.png] [--seed 1]
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from client_selectors import ClientProfile, ClientSelector, make_selector
from coordinator.agent_table import AgentTable
from coordinator.eligibility import AgentAttributes, Requirements, attributes_of
from coordinator.scheduler import JobDemand, Policy, Scheduler
from fedbus.fleet import Fleet
from fedbus.fleet.builders import build_synthetic
from fedbus.fleet.virtual_round import RoundWork, simulate_round
from fedbus.protocol.messages import AgentProfile

OVERCOMMIT = 1.3


@dataclass(frozen=True)
class JobSpec:
    name: str
    arrival: float  # virtual seconds
    rounds: int
    k: int  # participants kept per round
    params: int  # model size the time model charges
    selector: str
    requires: Requirements = field(default_factory=Requirements)

    @property
    def dispatch(self) -> int:
        return int(self.k * OVERCOMMIT)


# Together they ask for about 1,300 devices a round, on pools that overlap: they contend.
JOBS = (
    JobSpec("speech-large", 0, 60, 300, 20_000_000, "oort"),
    JobSpec("kbd-small", 300, 30, 50, 1_000_000, "random"),
    JobSpec("vision-8gb", 600, 40, 150, 11_000_000, "oort", Requirements(min_memory_gb=8)),
    JobSpec("wifi-only", 900, 50, 150, 5_000_000, "random", Requirements(tags=("wifi",))),
    JobSpec("samsung", 1200, 25, 80, 3_000_000, "oort", Requirements(device_model="samsung*")),
    JobSpec("rich-data", 1500, 30, 100, 2_000_000, "oort", Requirements(min_samples=400)),
    JobSpec("tiny", 1800, 10, 20, 500_000, "random"),
    JobSpec(
        "apple-6gb", 2100, 20, 30, 8_000_000, "random",
        Requirements(device_model="apple*", min_memory_gb=6),
    ),
)  # fmt: skip


def pool(fleet: Fleet, seed: int) -> tuple[AgentTable, dict[str, int]]:
    """Attributes as agents would advertise them: fleet entry, data size, an operator tag."""
    rng = random.Random(seed)
    samples: dict[str, int] = {}
    agents: list[AgentAttributes] = []
    for device in fleet:
        samples[device.client_id] = int(rng.lognormvariate(5.5, 0.6))
        profile = AgentProfile(
            emulated=True,
            num_samples=samples[device.client_id],
            static=dict(device.static),
            tags=["wifi"] if rng.random() < 0.3 else [],
        )
        agents.append(attributes_of(device.client_id, profile))
    return AgentTable(agents), samples


@dataclass
class _Running:
    spec: JobSpec
    selector: ClientSelector
    done_rounds: int = 0
    finished: float | None = None


@dataclass
class Outcome:
    jct: dict[str, float]
    makespan: float
    latencies: list[float]

    @property
    def avg_jct(self) -> float:
        return statistics.fmean(self.jct.values())


def simulate(fleet: Fleet, policy: str, *, sequential: bool, seed: int) -> Outcome:
    """Run JOBS on the virtual clock; ``sequential``: one job at a time, arrival order."""
    table, samples = pool(fleet, seed)
    scheduler = Scheduler(policy, seed=seed)
    scheduler.set_table(table)
    utility_rng = np.random.default_rng(seed)
    events: list[tuple[float, int, str, str]] = [
        (j.arrival, i, "arrive", j.name) for i, j in enumerate(JOBS)
    ]
    heapq.heapify(events)
    seq = len(JOBS)
    jobs: dict[str, _Running] = {}
    waiting: list[str] = []
    latencies: list[float] = []
    now = 0.0

    def demand(run: _Running) -> JobDemand:
        s = run.spec
        return JobDemand(s.name, s.requires, s.dispatch, s.k, s.rounds - run.done_rounds)

    def try_start(name: str) -> bool:
        nonlocal seq
        run = jobs[name]
        if sequential and name != next(j for j in jobs if jobs[j].finished is None):
            return False  # one job at a time: the earliest arrived unfinished one
        scheduler.update_job(demand(run))
        began = time.perf_counter()
        grant = scheduler.grant(name)
        latencies.append(time.perf_counter() - began)
        if grant.reason is not None:
            return False
        spec, round_ = run.spec, run.done_rounds + 1
        work = RoundWork.dense(spec.params, 32, 20)
        for agent in grant.agents:
            run.selector.register_client(agent, ClientProfile(num_samples=samples[agent]))
        chosen = run.selector.select_participants(spec.dispatch, now, list(grant.agents)).clients
        times = {
            a: simulate_round(fleet.by_id(a), now, work, seed=seed, round_=round_).total
            for a in chosen
        }
        kept = sorted(times, key=times.__getitem__)[: spec.k]
        scheduler.hold(name, kept)
        for agent in kept:
            utility = samples[agent] * float(utility_rng.lognormal(0.0, 0.5))
            run.selector.register_feedback(agent, utility, round_, times[agent], True)
        heapq.heappush(events, (now + max(times[a] for a in kept), seq, "round", name))
        seq += 1
        return True

    def start_waiting() -> None:
        for name in scheduler.order():
            if name in waiting and try_start(name):
                waiting.remove(name)

    while events:
        now, _, kind, name = heapq.heappop(events)
        if kind == "arrive":
            spec = next(j for j in JOBS if j.name == name)
            jobs[name] = _Running(spec, make_selector(spec.selector, {}, seed))
            scheduler.add_job(demand(jobs[name]))
            waiting.append(name)
        else:
            run = jobs[name]
            scheduler.hold(name, ())
            run.done_rounds += 1
            if run.done_rounds == run.spec.rounds:
                run.finished = now
                scheduler.remove_job(name)
            else:
                waiting.append(name)
        start_waiting()
    unfinished = [r.spec.name for r in jobs.values() if r.finished is None]
    if unfinished:
        raise RuntimeError(f"{policy}: jobs never finished: {unfinished}")
    jct = {r.spec.name: (r.finished or 0.0) - r.spec.arrival for r in jobs.values()}
    return Outcome(jct, max(r.finished or 0.0 for r in jobs.values()), latencies)


def latency_at_scale(
    agents: int, jobs: int, decisions: int, seed: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU seconds per grant at Propius's scale, per policy (holds churn)."""
    rng = random.Random(seed)
    kinds, models = (
        ("cpu", "cuda", "jetson"),
        ("Jetson AGX Orin", "Pixel 5", "RTX 4090", "Galaxy S10"),
    )
    table = AgentTable([
        AgentAttributes(
            f"a{i:05d}", rng.choice(kinds), rng.choice(models), rng.choice((2.0, 4.0, 8.0, 16.0)),
            rng.randint(0, 2000), frozenset(rng.sample(("x", "y", "z"), rng.randint(0, 2))),
        )
        for i in range(agents)
    ])  # fmt: skip
    out: dict[str, list[float]] = {}
    for policy in Policy:
        scheduler = Scheduler(policy, seed=seed)
        scheduler.set_table(table)
        for j in range(jobs):
            requires = Requirements(
                accelerator=tuple(rng.sample(kinds, 2)) if j % 2 else (),
                min_memory_gb=rng.choice((0.0, 4.0, 8.0)),
                tags=(rng.choice(("x", "y")),) if j % 3 == 0 else (),
            )
            scheduler.add_job(
                JobDemand(f"j{j}", requires, rng.randint(10, 300), 10, rng.randint(1, 100))
            )
        times: list[float] = []
        cpu: list[float] = []
        for d in range(decisions):
            job = f"j{d % jobs}"
            if scheduler.holds[job]:
                scheduler.hold(job, ())
            began, began_cpu = time.perf_counter(), time.thread_time()
            grant = scheduler.grant(job)
            times.append(time.perf_counter() - began)
            cpu.append(time.thread_time() - began_cpu)
            if grant.reason is None:
                scheduler.hold(job, grant.agents[: scheduler.jobs[job].demand.demand])
        out[policy.value] = (times, cpu)
    return out


def ms(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) * 1e3


def plot(results: dict[str, Outcome], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(names, [results[n].avg_jct / 3600 for n in names], color="tab:blue")
    left.set_ylabel("average JCT (virtual hours)")
    right.bar(names, [results[n].makespan / 3600 for n in names], color="tab:orange")
    right.set_ylabel("makespan (virtual hours)")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{len(JOBS)} jobs on a 1,000-device fleet (bench/multi_job.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--png", default="multi_job.png")
    parser.add_argument("--decisions", type=int, default=400)
    args = parser.parse_args()

    fleet = build_synthetic(args.devices, args.seed, "lab")
    results: dict[str, Outcome] = {}
    for policy in Policy:
        results[policy.value] = simulate(fleet, policy.value, sequential=False, seed=args.seed)
    results["sequential"] = simulate(fleet, "fifo", sequential=True, seed=args.seed)
    base = results["sequential"].avg_jct
    print(f"{len(JOBS)} jobs, {len(fleet)} devices, virtual clock (hours); JCT ratio vs sequential")
    print(
        f"{'policy':<11} {'avg JCT':>8} {'ratio':>6} {'makespan':>9} {'decisions':>9} {'mean ms':>8} {'p99 ms':>7}"
    )
    for name, r in results.items():
        print(
            f"{name:<11} {r.avg_jct / 3600:8.2f} {r.avg_jct / base:6.2f} {r.makespan / 3600:9.2f}"
            f" {len(r.latencies):9d} {statistics.fmean(r.latencies) * 1e3:8.3f} {ms(r.latencies, 0.99):7.3f}"
        )
    print("per-job JCT (hours):")
    print(f"{'job':<13}" + "".join(f"{n:>11}" for n in results))
    for spec in JOBS:
        print(
            f"{spec.name:<13}"
            + "".join(f"{results[n].jct[spec.name] / 3600:11.2f}" for n in results)
        )
    best = min((n for n in results if n != "sequential"), key=lambda n: results[n].avg_jct)
    print(
        f"best policy: {best}, avg JCT {results[best].avg_jct / base:.2f}x sequential (target <= 0.6)"
    )
    scale = latency_at_scale(10_000, 20, args.decisions, args.seed)
    print(
        f"decision latency at 10,000 agents x 20 jobs ({args.decisions} decisions; target <= 10 ms):"
    )
    print("  (wall p99/max include preemption on a shared machine; cpu is this thread's time)")
    for policy, (times, cpu) in scale.items():
        print(
            f"  {policy:<9} wall mean {statistics.fmean(times) * 1e3:6.3f} ms  p50 {ms(times, 0.5):6.3f}"
            f"  p99 {ms(times, 0.99):6.3f}  max {max(times) * 1e3:6.3f}"
            f"  | cpu mean {statistics.fmean(cpu) * 1e3:6.3f}  p99 {ms(cpu, 0.99):6.3f} ms"
        )
    plot(results, args.png)
    print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
