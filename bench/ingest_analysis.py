"""The figures of ``bench/ingest.py``: each round's window, rate and loop lag from what the
probes recorded, and the lines printed for them."""

from __future__ import annotations

import bisect
import itertools
import statistics
from typing import Any

from bench.ingest_common import MB
from bench.ingest_probes import Recorder, Stall


def analyse(
    kind: str, n: int, rec: Recorder, events: list[dict[str, Any]], total: float, ok: bool
) -> dict[str, Any]:
    ends = {e["round"]: e["data"] for e in events if e["event"] == "ROUND_END"}
    lag_ends = [t for t, _ in rec.lag]
    rounds = []
    previous = float("-inf")
    for r, begin in sorted(rec.round_begins.items()):
        aggregated = next((t for t in rec.model_publishes if t > begin), None)
        if aggregated is None or r not in ends:
            continue
        # The round engine dispatches before it records ROUND_BEGIN: the round's task
        # PUBACKs are those after the previous round's model went out.
        acks = [t for t in rec.task_acks if previous < t < aggregated]
        previous = aggregated
        if not acks:
            continue
        acked = max(acks)
        # The first byte of the first update: the PUBACKs of the round's tasks, events and
        # the last model are read before it and are not the updates' ingest.
        i = bisect.bisect_right(rec.publish_starts, acked)
        if i >= len(rec.publish_starts) or rec.publish_starts[i] > aggregated:
            continue
        first = rec.publish_starts[i]
        ups = [(t, size) for t, k, size in rec.inbox if k == "update" and acked < t <= aggregated]
        last_in = max(t for t, _ in ups) if ups else None
        lo = bisect.bisect_left(lag_ends, first)
        hi = bisect.bisect_right(lag_ends, aggregated)
        window_lags = [lag for _, lag in rec.lag[lo:hi]]
        sched = rec.sched[max(lo - 1, 0) : hi]
        window_cpu = [(b[0] - a[0]) / 1e9 for a, b in itertools.pairwise(sched)]
        loop_cpu = (sched[-1][0] - sched[0][0]) / 1e9 if sched else 0.0
        loop_wait = (sched[-1][1] - sched[0][1]) / 1e9 if sched else 0.0
        window_gc = [(pause, gen) for end, pause, gen in rec.gc_runs if first <= end <= aggregated]
        window_stalls = [s for s in rec.stalls if first <= s.end <= aggregated]
        data = ends[r]
        durations = list(data.get("durations", {}).values())
        rounds.append(
            {
                "round": r,
                "window_s": aggregated - first,
                "all_in_s": (last_in - first) if last_in else None,
                "updates": len(data.get("kept", [])),
                "bytes": sum(size for _, size in ups),
                "messages": len(ups),
                "lag_max_s": max(window_lags) if window_lags else None,
                "lag_samples": len(window_lags),
                "cpu_between_ticks_max_s": max(window_cpu, default=0.0),
                "loop_cpu_s": loop_cpu,
                "loop_runq_s": loop_wait,
                "window_lags": window_lags,
                "gc_runs": len(window_gc),
                "gc_gen2": sum(1 for _, gen in window_gc if gen == 2),
                "gc_max_s": max((pause for pause, _ in window_gc), default=0.0),
                "stalls": window_stalls,
                "timing": data.get("timing", {}),
                "agent_wall_s": (min(durations), max(durations)) if durations else None,
                "dispatch_to_first_byte_s": first - acked,
            }
        )
    lags = sorted(lag for _, lag in rec.lag)
    return {
        "kind": kind,
        "ok": ok,
        "total_s": total,
        "rounds": rounds,
        "lag_max_job_s": lags[-1] if lags else None,
        "lag_p99_job_s": lags[int(0.99 * (len(lags) - 1))] if lags else None,
        "slow_callbacks": rec.slow_callbacks,
        "stalls_job": rec.stalls,
        "gc_full_job": [pause for _, pause, gen in rec.gc_runs if gen == 2],
    }


def print_fedbus(result: dict[str, Any], bare_rate: float | None) -> float | None:
    kind = result["kind"]
    label = {"agents": "fedbus, edge-agent run", "replay": "fedbus, replay publishers"}[kind]
    rounds = result["rounds"]
    if not rounds:
        print(f"{label}: no round measured (ok={result['ok']})")
        return None
    print(f"{label} ({len(rounds)} rounds, coordinator in this process):")
    for r in rounds:
        t = r["timing"]
        wall = r["agent_wall_s"]
        rate = r["updates"] / r["window_s"]
        print(
            f"  round {r['round']}: {r['updates']} updates, {r['bytes'] / MB:.0f} MB in "
            f"{r['messages']} messages; first byte -> aggregated {r['window_s']:.2f} s = "
            f"{rate:.2f} updates/s, {r['bytes'] / MB / r['window_s']:.0f} MB/s; all in after "
            f"{r['all_in_s']:.2f} s; loop lag max {1e3 * (r['lag_max_s'] or 0):.0f} ms; "
            f"GC {r['gc_runs']} runs ({r['gc_gen2']} full), longest {1e3 * r['gc_max_s']:.0f} ms"
        )
        print(
            f"    loop thread: on a CPU {r['loop_cpu_s']:.2f} s, waiting for one "
            f"{r['loop_runq_s']:.2f} s; most CPU between two lag samples "
            f"{1e3 * r['cpu_between_ticks_max_s']:.0f} ms (the loop's own work, 10 ms sleep included)"
        )
        print(
            f"    coordinator: ingest {t.get('ingest_s', 0):.2f} s (in _drain), aggregate "
            f"{t.get('aggregate_s', 0) * 1e3:.0f} ms, checkpoint {t.get('checkpoint_s', 0) * 1e3:.0f} ms; "
            f"task ack -> first byte {r['dispatch_to_first_byte_s']:.2f} s"
            + (f"; agents' reported wall {wall[0]:.2f}-{wall[1]:.2f} s" if wall else "")
        )
    windows = [r["window_s"] for r in rounds]
    window = statistics.median(windows)
    nbytes = statistics.median(r["bytes"] for r in rounds)
    updates = statistics.median(r["updates"] for r in rounds)
    rate = updates / window
    lag = max((r["lag_max_s"] or 0) for r in rounds)
    streaming = sorted(lag for r in rounds for lag in r["window_lags"])
    p99 = streaming[int(0.99 * (len(streaming) - 1))] if streaming else 0.0
    print(
        f"  median: {rate:.2f} updates/s, {nbytes / MB / window:.0f} MB/s (first byte -> "
        f"aggregated model {window:.2f} s)"
        + (
            f"; {rate / bare_rate:.2f}x the bare paho subscriber (target >= 1.3x)"
            if bare_rate
            else ""
        )
    )
    verdict = "met" if lag <= 0.050 else "MISSED"
    print(
        f"  loop lag while updates stream in: max {lag * 1e3:.0f} ms (target <= 50 ms: {verdict}), "
        f"p99 {p99 * 1e3:.0f} ms; "
        f"whole job: max {1e3 * (result['lag_max_job_s'] or 0):.0f} ms, p99 "
        f"{1e3 * (result['lag_p99_job_s'] or 0):.0f} ms"
    )
    streaming_stalls = [s for r in rounds for s in r["stalls"]]
    if streaming_stalls:
        print(f"  loop stalls over 40 ms while streaming ({len(streaming_stalls)}), longest first:")
        _print_stalls(streaming_stalls)
    other = [s for s in result["stalls_job"] if s not in streaming_stalls]
    if other:
        print(f"  loop stalls over 40 ms outside streaming ({len(other)}), longest first:")
        _print_stalls(other)
    full = result["gc_full_job"]
    print(
        f"  full GC runs over the whole job: {len(full)}"
        + (f", longest {1e3 * max(full):.0f} ms" if full else "")
    )
    if result["slow_callbacks"]:
        print(f"  asyncio slow callbacks (> 50 ms): {len(result['slow_callbacks'])}")
        for line in result["slow_callbacks"][:8]:
            print(f"    {line}")
    return rate


def _print_stalls(stalls: list[Stall], top: int = 5) -> None:
    for stall in sorted(stalls, key=lambda s: -s.lag)[:top]:
        print(
            f"    {1e3 * stall.lag:.0f} ms: on a CPU {1e3 * stall.cpu:.0f} ms, waiting for one "
            f"{1e3 * stall.runq:.0f} ms, blocked (GIL, system call) {1e3 * stall.blocked:.0f} ms"
        )
        for where in stall.stacks[:4]:
            print(f"      {where}")
        for name, cpu in sorted(stall.busy.items(), key=lambda kv: -kv[1])[:3]:
            if cpu >= 0.005:
                print(f"      meanwhile {name} ran {1e3 * cpu:.0f} ms:")
                for where in stall.others.get(name, [])[:3]:
                    print(f"        {where}")
