"""``coordinator report``'s custom metrics: a job's own numbers, per round, per run.

Reads the ``metrics`` summaries of ROUND_END events (coordinator/metrics.py), prints one
line per run and metric (first and last round's weighted mean, and the spread across
agents at the end), draws ``custom_metrics.png`` (the weighted mean per round with the
agents' min-max band, one panel per metric) and adds a section to ``summary.md``.
Runs without custom metrics add nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coordinator.events import read_events

PLOT = "custom_metrics.png"


@dataclass(frozen=True)
class MetricPoint:
    round: int
    mean: float
    median: float
    low: float
    high: float
    agents: int


def read_metric_series(run_dir: Path) -> dict[str, list[MetricPoint]]:
    """Each custom validation metric of the run: one point per round that reported it."""
    series: dict[str, list[MetricPoint]] = {}
    for event in read_events(run_dir / "events.jsonl"):
        if event.get("event") != "ROUND_END":
            continue
        for name, s in sorted((event.get("data", {}).get("metrics") or {}).items()):
            series.setdefault(name, []).append(
                MetricPoint(
                    int(event["round"]),
                    s["mean"],
                    s["median"],
                    s["min"],
                    s["max"],
                    int(s["agents"]),
                )
            )
    return series


def summary_lines(runs: dict[str, dict[str, list[MetricPoint]]]) -> list[str]:
    lines = []
    for run, series in runs.items():
        for name, points in series.items():
            first, last = points[0], points[-1]
            lines.append(
                f"{run}: {name} {first.mean:.4g} (round {first.round}) -> {last.mean:.4g} "
                f"(round {last.round}; agents {last.low:.4g}..{last.high:.4g}, "
                f"median {last.median:.4g}, {last.agents} agents)"
            )
    return lines


def plot(runs: dict[str, dict[str, list[MetricPoint]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({name for series in runs.values() for name in series})
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for run, series in runs.items():
            points = series.get(name)
            if not points:
                continue
            rounds = [p.round for p in points]
            (line,) = ax.plot(rounds, [p.mean for p in points], marker="o", ms=3, label=run)
            ax.fill_between(
                rounds,
                [p.low for p in points],
                [p.high for p in points],
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
        ax.set_title(f"{name} (mean; band: agents' min-max)")
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(run_dirs: Sequence[Path], out: Path) -> list[str]:
    """Plot and summarise the runs' custom metrics into ``out``; the lines to print."""
    runs = {d.name: s for d in run_dirs if (s := read_metric_series(d))}
    if not runs:
        return []
    lines = summary_lines(runs)
    out.mkdir(parents=True, exist_ok=True)
    plot(runs, out / PLOT)
    with (out / "summary.md").open("a", encoding="utf-8") as f:
        f.write("\n## Custom metrics\n\n" + "".join(f"- {line}\n" for line in lines))
        f.write(f"\n![custom metrics]({PLOT})\n")
    return [*lines, f"wrote {PLOT} to {out}/"]
