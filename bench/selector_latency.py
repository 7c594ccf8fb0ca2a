"""Latency of one ``select_participants`` call, per selector, at 10,000 and 100,000 clients.

For every selector and fleet size: register N clients (lognormal durations and sample
counts, phone-like static metadata for Bliss, a fixed dynamic-window table as Bliss's
source), give a quarter of the fleet an initial feedback (Oort/PyramidFL explored pool) and
run warm-up rounds of select -> feedback -> stragglers so learning state is non-trivial,
then time ``repeats`` further rounds and report the median and p90 time of the
``select_participants`` call alone (for Bliss that includes its per-round refit of g and h).
Everyone is online; each call picks 130.

Targets: random, oort and pyramidfl <= 20 ms at 100,000 clients; bliss <= 1 s.

    .venv/bin/python bench/selector_latency.py [--sizes 10000 100000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import numpy as np

from client_selectors import (
    SELECTORS,
    BlissSelector,
    ClientProfile,
    ClientSelector,
    make_selector,
)

PICK = 130
TARGET_S = {"random": 0.020, "oort": 0.020, "pyramidfl": 0.020, "bliss": 1.0}
BRANDS = ("samsung", "xiaomi", "apple", "google", "huawei", "oppo", "nvidia", "dell")
OSES = ("android", "ios", "linux")


def build(name: str, n: int, seed: int) -> tuple[list[str], np.ndarray, ClientSelector]:
    """A selector with n registered clients; returns ids, true utilities and the selector."""
    rng = np.random.default_rng(seed)
    selector = make_selector(name, {}, seed)
    ids = [f"client-{i:06d}" for i in range(n)]
    samples = rng.lognormal(5.0, 1.0, n).astype(int) + 10
    durations = rng.lognormal(3.0, 0.8, n)
    utility = rng.lognormal(2.0, 0.7, n)
    cpu = rng.uniform(1e9, 1e11, n)
    for i, client_id in enumerate(ids):
        static: dict[str, float | str] = {
            "os": OSES[i % 3],
            "os_version": float(5 + i % 10),
            "brand": BRANDS[i % len(BRANDS)],
            "model": f"model-{i % 97}",
            "cpu_flops": float(cpu[i]),
            "ram_gb": float(2 ** (1 + i % 4)),
            "device_type": "phone",
        }
        profile = ClientProfile(
            num_samples=int(samples[i]),
            duration=float(durations[i]),
            compute_time=float(0.6 * durations[i]),
            comm_time=float(0.4 * durations[i]),
            static=static,
        )
        selector.register_client(client_id, profile)
    if isinstance(selector, BlissSelector):
        windows = rng.random((n, 15))
        index = {c: i for i, c in enumerate(ids)}
        selector.set_dynamic_source(lambda cid, now: windows[index[cid]])
    return ids, utility, selector


def play_round(
    selector: ClientSelector,
    ids: Sequence[str],
    utility: np.ndarray,
    r: int,
    rng: np.random.Generator,
    churn: float,
) -> float:
    """One round: timed select, then feedback for 100 picks and stragglers for the rest.

    With churn > 0 a fresh online list (a random 1 - churn of the fleet, in id order) is
    built before the timed call, so nothing can be reused from the previous call.
    """
    online = ids
    if churn > 0:
        keep = np.sort(rng.choice(len(ids), int(len(ids) * (1 - churn)), replace=False))
        online = [ids[i] for i in keep]
    start = time.perf_counter()
    picked = selector.select_participants(PICK, float(r * 60), online).clients
    elapsed = time.perf_counter() - start
    kept, stragglers = picked[:100], picked[100:]
    for client_id in kept:
        i = int(client_id.split("-")[1])
        reward = float(utility[i] * rng.lognormal(0.0, 0.2))
        selector.register_feedback(client_id, reward, r, 30.0, True, gradient_utility=reward)
    selector.register_stragglers(stragglers, {c: 90.0 for c in stragglers}, r)
    return elapsed


def measure(name: str, n: int, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """Select timings (s) with the same online list, then with a fresh 95% list each call."""
    ids, utility, selector = build(name, n, seed=7)
    rng = np.random.default_rng(11)
    if name in ("oort", "pyramidfl"):  # a large explored pool: a quarter of the fleet
        for i in rng.choice(n, n // 4, replace=False):
            selector.register_feedback(ids[i], float(utility[i]), 0, 30.0, True)
    for r in range(1, warmup + 1):
        play_round(selector, ids, utility, r, rng, churn=0.0)
    same = [play_round(selector, ids, utility, warmup + r, rng, 0.0) for r in range(repeats)]
    fresh = [
        play_round(selector, ids, utility, warmup + repeats + r, rng, 0.05) for r in range(repeats)
    ]
    return same, fresh


def summary(times: list[float]) -> tuple[float, float]:
    """(median, p90) in ms."""
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return statistics.median(ordered) * 1e3, p90 * 1e3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--selectors", nargs="+", default=list(SELECTORS))
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)

    print(
        f"select_participants({PICK} of N) after {args.warmup} warm-up rounds; median and p90"
        f" of {args.repeats} calls, in ms"
    )
    print("  same list: all N online, the same online list every call (the spec'd case)")
    print("  fresh 95%: a new online list of a random 95% of N every call (no reuse)")
    header = (
        f"{'selector':<10} {'N':>8} | {'same: median':>12} {'p90':>7} | "
        f"{'fresh 95%: median':>17} {'p90':>7} | {'target':>6}  ok"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for name in args.selectors:
        for n in args.sizes:
            same, fresh = measure(name, n, args.warmup, args.repeats)
            s_med, s_p90 = summary(same)
            f_med, f_p90 = summary(fresh)
            target = TARGET_S[name] * 1e3
            ok = s_med <= target
            failed |= not ok
            print(
                f"{name:<10} {n:>8} | {s_med:>12.2f} {s_p90:>7.2f} | {f_med:>17.2f} {f_p90:>7.2f}"
                f" | {target:>6.0f}  {'yes' if ok else 'NO'}"
            )
    print("targets at 100,000 (median, same list): random/oort/pyramidfl <= 20 ms;")
    print("bliss <= 1000 ms including its per-round refit of g and h")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
