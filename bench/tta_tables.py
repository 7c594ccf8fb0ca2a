"""Tables of the time-to-accuracy study: one row per (policy, mode), medians over seeds.

A *mode* is how the agents train: ``off`` (fixed local steps, the K fastest dispatched),
``on`` (adaptive training against the paced budget, with error feedback) and ``on-noef``
(adaptive, error feedback off); ``off-noef`` turns error feedback off without adaptive
training (only PyramidFL's dropout compresses there).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.harness import HOUR, RunResult, fmt_hours, median_or_none, smoothed

MODES: dict[str, tuple[bool, bool]] = {
    # mode: (adaptive_training, error_feedback)
    "off": (False, True),
    "on": (True, True),
    "on-noef": (True, False),
    "off-noef": (False, False),
}


@dataclass
class Row:
    policy: str
    mode: str
    runs: list[RunResult]
    target: float
    smooth: int = 1

    @property
    def tta(self) -> float | None:
        return median_or_none([r.time_to(self.target, self.smooth) for r in self.runs])

    @property
    def reached(self) -> int:
        return sum(1 for r in self.runs if r.time_to(self.target, self.smooth) is not None)

    @property
    def final(self) -> float | None:
        """Median over seeds of the final accuracy (the mean of the last ``smooth`` evaluations)."""
        finals = [final_accuracy(r, self.smooth) for r in self.runs]
        values = [f for f in finals if f is not None]
        return statistics.median(values) if values else None

    @property
    def failed_frac(self) -> float:
        rounds = sum(r.rounds for r in self.runs)
        return sum(r.failed_rounds for r in self.runs) / rounds if rounds else 0.0

    @property
    def rounds_to(self) -> float | None:
        values = [self._round_to(r) for r in self.runs]
        return median_or_none(values)

    def _round_to(self, run: RunResult) -> float | None:
        hit = run.round_to(self.target, self.smooth)
        return None if hit is None else float(hit)

    @property
    def round_s(self) -> float:
        return statistics.median(statistics.median(r.round_durations() or [0.0]) for r in self.runs)

    @property
    def wall(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)


def final_accuracy(run: RunResult, smooth: int) -> float | None:
    points = smoothed(run.points, smooth)
    return points[-1].accuracy if points else None


def ratio(base: float | None, other: float | None) -> str:
    if base is None or other is None or other <= 0:
        return "-"
    return f"{base / other:.2f}x"


def describe_run(run: RunResult, target: float) -> str:
    curve = " ".join(f"{p.accuracy:.2f}" for p in run.points)
    durations = run.round_durations() or [0.0]
    return (
        f"{run.name:<34} wall {run.wall_s:6.1f} s  rounds {run.rounds:3d}"
        f" (failed {run.failed_rounds})  virtual {run.virtual_time / HOUR:6.3f} h"
        f"  median round {statistics.median(durations):6.1f} s"
        f"  to {target:.2f}: {fmt_hours(run.time_to(target))} h"
        f" (round {run.round_to(target) or '-'})  final {run.final_accuracy or 0:.3f}"
        f"  [{curve}]"
    )


def print_table(title: str, rows: list[Row], target: float) -> None:
    """One table; 'vs random' compares within a mode, 'vs off' a mode with ``off``."""
    by = {(r.policy, r.mode): r for r in rows}
    smooth = rows[0].smooth if rows else 1
    print()
    print(
        f"{title}: time to {target:.0%} accuracy (virtual hours, median over seeds; '-': most"
        " seeds never reached it)"
        + (f", on the trailing mean of {smooth} evaluations" if smooth > 1 else ", raw")
    )
    header = (
        f"{'policy':<10} {'mode':<8} {'hours':>7} {'reached':>7} {'rounds':>6} {'final':>6}"
        f" {'d final':>7} {'failed':>6} {'round s':>7} {'vs random':>9} {'vs off':>7}"
        f" {'wall s':>7}  hours per seed"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        base = by.get(("random", r.mode))
        off = by.get((r.policy, "off"))
        gain = ratio(off.tta, r.tta) if r.mode != "off" and off is not None else ""
        delta = ""
        if r.mode != "off" and off is not None and off.final is not None and r.final is not None:
            delta = f"{100 * (r.final - off.final):+.1f}"
        rounds = "-" if r.rounds_to is None else f"{r.rounds_to:.0f}"
        final = "-" if r.final is None else f"{r.final:.3f}"
        per_seed = " ".join(fmt_hours(run.time_to(target, smooth)) for run in r.runs)
        print(
            f"{r.policy:<10} {r.mode:<8} {fmt_hours(r.tta):>7}"
            f" {r.reached:>3}/{len(r.runs):<3} {rounds:>6} {final:>6} {delta:>7}"
            f" {100 * r.failed_frac:>5.1f}% {r.round_s:>7.1f}"
            f" {ratio(base.tta if base else None, r.tta):>9} {gain:>7} {r.wall:>7.1f}"
            f"  {per_seed}"
        )
