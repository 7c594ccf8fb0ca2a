"""Per-device figures for ``coordinator report``: round time and energy by agent.

Read from the rounds' events (``ROUND_END``/``ROUND_FAILED``): ``durations`` (each
agent's reported round time: on the wall clock its own t_dl + t_comp + planned t_ul) and
``resources`` (its per-round summary: ``energy_j`` where the device can measure it). The
statistics are pure (:func:`device_stats`); :func:`plot_devices` draws them on matplotlib's
Agg canvas (no pyplot, no display), one box per agent, over every run given.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.events import read_events

DEVICE_PLOTS = ("round_time_by_device.png", "energy_by_device.png")


@dataclass
class DeviceStats:
    round_times: list[float] = field(default_factory=list)
    energy_j: list[float] = field(default_factory=list)

    @property
    def median_round_time(self) -> float | None:
        return statistics.median(self.round_times) if self.round_times else None


def device_stats(events: Iterable[dict[str, Any]]) -> dict[str, DeviceStats]:
    """Every agent's reported round times and energies, over the rounds of the events."""
    stats: dict[str, DeviceStats] = defaultdict(DeviceStats)
    for event in events:
        if event.get("event") not in ("ROUND_END", "ROUND_FAILED"):
            continue
        data = event.get("data", {})
        for agent, seconds in data.get("durations", {}).items():
            stats[agent].round_times.append(float(seconds))
        for agent, summary in data.get("resources", {}).items():
            if "energy_j" in summary:
                stats[agent].energy_j.append(float(summary["energy_j"]))
    return dict(sorted(stats.items()))


def plot_devices(run_dirs: Sequence[Path], out: Path) -> list[Path]:
    """Draw round time (and, where any agent measured it, energy) by device into ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    merged: dict[str, DeviceStats] = defaultdict(DeviceStats)
    for run_dir in run_dirs:
        for agent, s in device_stats(read_events(run_dir / "events.jsonl")).items():
            merged[agent].round_times += s.round_times
            merged[agent].energy_j += s.energy_j
    agents = sorted(merged)
    written: list[Path] = []
    for name, values, label in (
        (DEVICE_PLOTS[0], [merged[a].round_times for a in agents], "round time (s)"),
        (DEVICE_PLOTS[1], [merged[a].energy_j for a in agents], "energy per round (J)"),
    ):
        shown = [(a, v) for a, v in zip(agents, values, strict=True) if v]
        if not shown:
            continue  # nothing measured (energy on a CPU-only fleet): no empty plot
        fig = Figure(figsize=(max(6.0, 0.5 * len(shown) + 2.0), 4.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.boxplot([v for _, v in shown], tick_labels=[a for a, _ in shown])
        ax.set_ylabel(label)
        ax.set_xlabel("agent")
        ax.tick_params(axis="x", labelrotation=60)
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / name)
        written.append(out / name)
    return written
