"""The five plots of a report, and ``render`` that draws them all into a directory.

One colour per label in every plot; points marked up to 20 of them; per-round curves over 40
rounds drawn as a rolling mean over the faint raw line; a failed round is an x on the duration
plot and a gap in the kept-bytes plot; the participation plot ranks agents by rounds kept (x in
% of agents, so fleets of any size compare) and zooms in when most were never kept.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from coordinator.report.bands import rank_band, smoothing_window, step_band
from coordinator.report.canvas import (
    DOTS_UP_TO,
    RC,
    Look,
    band_note,
    draw_band,
    draw_rounds,
    legend_name,
    looks,
    max_evaluations,
    max_rounds,
    new_figure,
    percent_axis,
    round_axis,
    rounds_note,
    save_figure,
    target_line,
)
from coordinator.report.runs import Clock, Group, time_to_target
from coordinator.report.summary import MB, median_time, time_unit

PLOTS = (
    "accuracy_vs_time.png",
    "accuracy_vs_round.png",
    "round_duration.png",
    "upload_bytes.png",
    "participation.png",
)


def plot_accuracy_vs_time(
    groups: Sequence[Group],
    palette: dict[str, Look],
    clock: Clock,
    target: float | None,
    path: Path,
) -> None:
    """Median accuracy over time per group; a dot where the group's median run hit the target.
    The unit (s, min, h) follows the longest run, as in the summary table."""
    scale, unit = time_unit(p.time(clock) for g in groups for r in g.runs for p in r.accuracy)
    unit = {"s": "seconds", "min": "minutes", "h": "hours"}[unit]
    xlabel = (
        f"virtual time ({unit})"
        if clock == "virtual"
        else f"wall-clock time since job start ({unit})"
    )
    fig, (ax,) = new_figure()
    dots = max_evaluations(groups) <= DOTS_UP_TO
    reached = False
    for group in groups:
        curves = [
            [(t / scale, p.accuracy) for p in run.accuracy if (t := p.time(clock)) is not None]
            for run in group.runs
        ]
        draw_band(ax, step_band(curves), palette[group.label], legend_name(group), dots=dots)
        if target is not None:
            ttt = median_time([time_to_target(r, target, clock) for r in group.runs])
            if ttt is not None:
                ax.plot(ttt / scale, target, "o", color=palette[group.label].colour, ms=7, zorder=5)
                reached = True
    target_line(ax, target)
    if reached:
        ax.plot([], [], "o", color="0.35", ms=7, label="time to target")
    ax.set_title(f"Test accuracy vs {'virtual' if clock == 'virtual' else 'wall-clock'} time")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_xlim(left=0)
    percent_axis(ax)
    save_figure(fig, path, band_note(groups))


def plot_accuracy_vs_round(
    groups: Sequence[Group], palette: dict[str, Look], target: float | None, path: Path
) -> None:
    fig, (ax,) = new_figure()
    dots = max_evaluations(groups) <= DOTS_UP_TO
    for group in groups:
        curves = [[(float(p.round), p.accuracy) for p in run.accuracy] for run in group.runs]
        draw_band(ax, step_band(curves), palette[group.label], legend_name(group), dots=dots)
    target_line(ax, target)
    ax.set_title("Test accuracy vs round")
    round_axis(ax)
    ax.set_ylabel("test accuracy")
    percent_axis(ax)
    save_figure(fig, path, band_note(groups))


def plot_round_duration(
    groups: Sequence[Group], palette: dict[str, Look], clock: Clock, path: Path
) -> None:
    """Duration per round; failed rounds (timeouts, too few updates) marked x."""
    fig, (ax,) = new_figure()
    rounds = max_rounds(groups)
    any_failed = False
    for group in groups:
        series = [
            {rec.round: d for rec in run.rounds if (d := rec.duration(clock)) is not None}
            for run in group.runs
        ]
        draw_rounds(ax, series, palette[group.label], legend_name(group), rounds)
        failed = [
            (rec.round, d)
            for run in group.runs
            for rec in run.rounds
            if not rec.ok and (d := rec.duration(clock)) is not None
        ]
        if failed:
            x, y = zip(*failed, strict=True)
            ax.plot(x, y, "x", color=palette[group.label].colour, ms=7, mew=2, zorder=5)
            any_failed = True
    if any_failed:
        ax.plot([], [], "x", color="0.35", ms=7, mew=2, label="failed round")
    ax.set_title(f"Round duration ({clock} clock)")
    round_axis(ax)
    ax.set_ylabel(f"round duration ({clock} seconds)")
    ax.set_ylim(bottom=0)
    save_figure(fig, path, rounds_note(groups, smoothing_window(rounds)))


def plot_upload_bytes(groups: Sequence[Group], palette: dict[str, Look], path: Path) -> None:
    """MB per round; a failed round keeps nothing, so it is left out of the kept panel."""
    fig, (kept_ax, all_ax) = new_figure(ncols=2)
    rounds = max_rounds(groups)
    for group in groups:
        kept = [
            {rec.round: rec.upload_bytes / MB for rec in r.rounds if rec.ok} for r in group.runs
        ]
        every = [{rec.round: rec.upload_bytes_all / MB for rec in r.rounds} for r in group.runs]
        draw_rounds(kept_ax, kept, palette[group.label], legend_name(group), rounds)
        draw_rounds(all_ax, every, palette[group.label], legend_name(group), rounds)
    kept_ax.set_title("Uploaded per round: kept updates")
    all_ax.set_title("Uploaded per round: all updates received")
    kept_ax.set_ylabel("MB per round (10⁶ bytes)")
    for ax in (kept_ax, all_ax):
        round_axis(ax)
        ax.set_ylim(bottom=0)
    save_figure(fig, path, rounds_note(groups, smoothing_window(rounds)))


def plot_participation(groups: Sequence[Group], palette: dict[str, Look], path: Path) -> None:
    """Agents ranked by how often they were kept: flat = fair, a cliff = a few favourites."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig, (ax,) = new_figure()
    for group in groups:
        shares = [
            r.participation.count(0) / len(r.participation) for r in group.runs if r.participation
        ]
        never = f", {statistics.median(shares):.0%} never kept" if shares else ""
        band = rank_band([r.participation for r in group.runs])
        draw_band(ax, band, palette[group.label], legend_name(group) + never, steps=True)
    agents = sorted({len(r.participation) for g in groups for r in g.runs})
    count = str(agents[0]) if len(agents) == 1 else f"{agents[0]}–{agents[-1]}"
    # Most agents never kept (a large fleet, few rounds): zoom on the ones that were.
    kept = max(
        (
            100 * sum(map(bool, r.participation)) / len(r.participation)
            for g in groups
            for r in g.runs
            if r.participation
        ),
        default=100.0,
    )
    right = 100.0 if kept > 60 else min(100.0, 10 * math.ceil(kept * 1.1 / 10 + 1e-9))
    rest = "" if right == 100 else f"; beyond {right:.0f}%: never kept"
    ax.set_title("Participation: rounds each agent was kept in")
    ax.set_xlabel(f"agents ranked by rounds kept (% of {count} agents{rest})")
    ax.set_ylabel("rounds kept in")
    ax.set_xlim(0, right)
    ax.xaxis.set_major_locator(MaxNLocator(steps=[1, 2, 5, 10]))
    ax.xaxis.set_major_formatter(PercentFormatter(100.0, decimals=0))
    ax.set_ylim(bottom=0)
    save_figure(fig, path, band_note(groups))


def render(groups: Sequence[Group], clock: Clock, target: float | None, out: Path) -> list[Path]:
    """Draw every plot into ``out``; groups come in legend order (colours follow it)."""
    import matplotlib

    out.mkdir(parents=True, exist_ok=True)
    palette = looks([g.label for g in groups])
    paths = [out / name for name in PLOTS]
    with matplotlib.rc_context(RC):  # type: ignore[arg-type]  # matplotlib: literal keys
        plot_accuracy_vs_time(groups, palette, clock, target, paths[0])
        plot_accuracy_vs_round(groups, palette, target, paths[1])
        plot_round_duration(groups, palette, clock, paths[2])
        plot_upload_bytes(groups, palette, paths[3])
        plot_participation(groups, palette, paths[4])
    return paths
