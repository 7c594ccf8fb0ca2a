"""FedAvg throughput against a plain read of the same bytes; robust rules for information.

    .venv/bin/python bench/aggregate.py [--params 11700000] [--ks 10,100] [--repeats 7]

One UpdateStack of max(ks) rows is filled once. For each K, FedAvg of rows 0..K-1 (the
one-sgemv path) is timed twice: returning a new array (the default; pays the page
faults of a fresh P-float result) and into a preallocated ``out``. Effective GB/s is
the bytes of the K rows read divided by the time. The baseline is the fastest of three
plain numpy reads of exactly those K rows, measured in the same run:

    max       ``X.max()``: one thread, SIMD, no output
    sum       ``X.sum()``: one thread, pairwise float32 sum
    max x T   ``X.max()`` over T row slices in T threads (numpy releases the GIL), T = cores

BLAS uses every core, so ``max x T`` is usually the fair one; the report says which won.
Also timed at K=10 (one gap, and every other row) to show the non-contiguous paths, and
median / trimmed mean / Krum at K=10 for information.

OpenBLAS worker threads busy-wait for a while (about 0.1 s by default) after every BLAS
call. On a machine with few cores that spin slows whatever runs next, here by 40-50 %:
a plain read timed right after an sgemv would look slower than it is and flatter the
ratio. So this script sets OPENBLAS_THREAD_TIMEOUT=4 (a short spin) unless the
environment already sets it, before numpy loads OpenBLAS, and prints the value used.
"""

from __future__ import annotations

import os

# Before numpy is imported: OpenBLAS reads it once, when the library loads.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from coordinator.aggregation import (
    UpdateStack,
    coordinate_median,
    fedavg,
    krum,
    trimmed_mean,
)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in ms over ``repeats`` runs, after one warm-up run."""
    return statistics.median(interleaved({"fn": fn}, repeats)["fn"])


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Times in ms of each function, run round-robin so all see the same machine load.

    On a shared machine the load changes from second to second; timing each candidate
    in its own stretch would compare them under different conditions.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def blas_info() -> str:
    lines = [
        f"{name}={os.environ.get(name, '(unset)')}"
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT")
    ]
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        lines.append("threadpoolctl: not installed")
    else:
        for pool in threadpool_info():
            lines.append(
                f"threadpoolctl: {pool.get('internal_api')} {pool.get('version')} "
                f"arch={pool.get('architecture')} threads={pool.get('num_threads')} "
                f"layer={pool.get('threading_layer')}"
            )
    return "; ".join(lines)


def plain_reads(data: np.ndarray, pool: ThreadPoolExecutor, threads: int) -> dict[str, Callable]:
    slices = np.array_split(np.arange(data.shape[0]), threads)
    parts = [data[s[0] : s[-1] + 1] for s in slices if s.size]
    return {
        "max": data.max,
        "sum": data.sum,
        f"max x {len(parts)}": lambda: list(pool.map(np.max, parts)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=11_700_000)
    parser.add_argument("--ks", default="10,100", help="comma-separated update counts")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--robust-k", type=int, default=10)
    parser.add_argument("--robust-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    p = args.params
    threads = os.cpu_count() or 1

    print(f"numpy {np.__version__}, python {platform.python_version()}, {threads} cpus")
    print(blas_info())
    capacity = max(max(ks), 2 * args.robust_k)
    stack = UpdateStack(p, capacity)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for k in range(capacity):
        rng.standard_normal(dtype=np.float32, out=stack.row(k))
    print(
        f"filled {capacity} x {p} float32 ({capacity * p * 4 / 1e9:.2f} GB) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    out = np.empty(p, dtype=np.float32)
    data = stack.array
    with ThreadPoolExecutor(threads) as pool:
        for k in ks:
            rows = range(k)
            weights = rng.integers(50, 500, k).astype(np.float64)
            gb = k * p * 4 / 1e9
            reads = plain_reads(data[:k], pool, threads)
            runs = interleaved(
                {
                    "new": lambda rows=rows, w=weights: fedavg(stack, rows, w),
                    "out": lambda rows=rows, w=weights: fedavg(stack, rows, w, out=out),
                    **reads,
                },
                args.repeats,
            )
            ms = {name: statistics.median(t) for name, t in runs.items()}
            best = {name: min(t) for name, t in runs.items()}
            base = min(reads, key=ms.__getitem__)
            others = ", ".join(f"{n} {ms[n]:.1f}" for n in reads)
            print(
                f"fedavg K={k} P={p}: {ms['new']:.1f} ms ({gb / ms['new'] * 1e3:.1f} GB/s)"
                f" new array | {ms['out']:.1f} ms ({gb / ms['out'] * 1e3:.1f} GB/s) out="
                f" | plain read [{base}] {ms[base]:.1f} ms ({gb / ms[base] * 1e3:.1f} GB/s)"
                f" | ratio {ms['new'] / ms[base]:.2f}x new, {ms['out'] / ms[base]:.2f}x out="
            )
            print(
                f"    medians of {args.repeats}, interleaved; plain reads ms: {others};"
                f" best-of ratio {best['new'] / best[base]:.2f}x new,"
                f" {best['out'] / best[base]:.2f}x out="
            )
        k = args.robust_k
        weights = np.ones(k)
        gb = k * p * 4 / 1e9
        for label, rows in (
            ("one gap", [*range(k // 2), *range(k // 2 + 1, k + 1)]),
            ("every other row", list(range(0, 2 * k, 2))),
        ):
            ms = timed(lambda rows=rows: fedavg(stack, rows, weights, out=out), args.repeats)
            print(f"fedavg K={k} {label}: {ms:.1f} ms ({gb / ms * 1e3:.1f} GB/s) out=")
        robust = {
            "median": lambda: coordinate_median(stack, range(k), out=out),
            "trimmed_mean(0.2)": lambda: trimmed_mean(stack, range(k), out=out),
            "krum(f=1)": lambda: krum(stack, range(k), num_byzantine=1, out=out),
        }
        for name, fn in robust.items():
            ms = timed(fn, args.robust_repeats)
            print(f"{name} K={k} P={p}: {ms:.0f} ms ({ms * 1e6 / p:.1f} ns per coordinate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
