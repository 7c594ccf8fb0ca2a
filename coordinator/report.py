"""``coordinator report``: plots and a markdown summary from runs' event logs.

::

    coordinator report RUN_DIR... [--out report] [--target 0.8] [--baseline random]
                                  [--label-by selector+adaptive|dir|job]

Each RUN_DIR holds an ``events.jsonl``, or holds run directories that do (one level down).
Runs are labelled (by default ``oort``, ``oort+adaptive``, ... from the JOB_BEGIN config) and
runs with one label (seeds) form a group: the plots draw the group's median and shade its
min-max band. ``--out`` gets accuracy_vs_time.png, accuracy_vs_round.png,
round_duration.png, upload_bytes.png, participation.png and summary.md; the summary table is
also printed.

Two layers: extraction (``parse_run``, ``time_to_target``, ``group_runs``, ``summarize``,
``markdown_summary``) takes parsed events and returns plain dataclasses, and touches neither
files nor matplotlib; rendering (``render``) draws them on matplotlib's Agg canvas (no
pyplot, no display). matplotlib is the optional ``fedbus[report]`` dependency and is imported
only to draw.

One clock for all runs in a report: virtual time when every run has it, else wall time since
each run's JOB_BEGIN (which includes waiting for agents, and any downtime before a resume).
Times are in s, min or h, whichever suits the longest, the same in the table and the plot.
A log with several JOB_BEGINs (a job started afresh in a used run directory) is read from its
last one; ROUND_ENDs re-emitted on resume count once.

Plots: one colour per label in every plot; points marked up to 20 of them; per-round curves
over 40 rounds drawn as a rolling mean over the faint raw line; a failed round is an x on the
duration plot and a gap in the kept-bytes plot; the participation plot ranks agents by rounds
kept (x in % of agents, so fleets of any size compare) and zooms in when most were never kept.

Errors::

    ReportError    no event log under a path, a log without JOB_BEGIN, an unknown --baseline
"""

from __future__ import annotations

import argparse
import bisect
import math
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from coordinator.events import EventName, read_events

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Clock = Literal["virtual", "wall"]
LABEL_BY = ("selector+adaptive", "dir", "job")
DEFAULT_BASELINE = "random"
DPI = 150
MB = 1e6
SMOOTH_AFTER = 40  # rounds; longer per-round curves are drawn as a rolling mean
DOTS_UP_TO = 20  # points; shorter curves mark each point (an evaluation, a round)
# Okabe-Ito: distinguishable with colour-blindness and in greyscale print; yellow left out.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
PLOTS = (
    "accuracy_vs_time.png",
    "accuracy_vs_round.png",
    "round_duration.png",
    "upload_bytes.png",
    "participation.png",
)


class ReportError(Exception):
    """Input the report cannot use; nothing was written."""


# -- extraction ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundRecord:
    """One closed round (ROUND_END or ROUND_FAILED); times are at the round's end."""

    round: int
    ok: bool
    wall_time: float  # s since JOB_BEGIN
    virtual_time: float | None
    wall_duration: float
    virtual_duration: float | None
    upload_bytes: int  # kept updates
    upload_bytes_all: int  # every update received
    kept: tuple[str, ...]

    def duration(self, clock: Clock) -> float | None:
        return self.virtual_duration if clock == "virtual" else self.wall_duration


@dataclass(frozen=True)
class AccuracyPoint:
    round: int
    wall_time: float  # s since JOB_BEGIN
    virtual_time: float | None
    accuracy: float

    def time(self, clock: Clock) -> float | None:
        return self.virtual_time if clock == "virtual" else self.wall_time


@dataclass(frozen=True)
class Run:
    name: str  # the run directory's name
    job: str
    selector: str
    adaptive: bool
    virtual: bool  # a virtual clock, and its times are in the log
    rounds: tuple[RoundRecord, ...]
    accuracy: tuple[AccuracyPoint, ...]
    participation: tuple[int, ...]  # rounds kept per agent, descending, never-kept agents as 0

    def label(self, by: str = "selector+adaptive") -> str:
        if by == "dir":
            return self.name
        if by == "job":
            return self.job
        return self.selector + ("+adaptive" if self.adaptive else "")


@dataclass(frozen=True)
class Group:
    label: str
    runs: tuple[Run, ...]


@dataclass(frozen=True)
class Band:
    """A group's curve: the median over its runs and the min-max envelope, on one grid."""

    x: tuple[float, ...]
    median: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]


@dataclass(frozen=True)
class SummaryRow:
    label: str
    runs: int
    reached: int  # runs that reached the target
    time_to_target: float | None  # median s on the report's clock; None: not reached / no target
    final_accuracy: float | None  # median
    rounds: float  # median closed rounds
    failed_rounds: float  # median over runs
    mean_round_duration: float | None  # median over runs of each run's mean, s
    upload_mb: float  # median over runs: kept updates
    upload_mb_all: float  # median over runs: every update received
    speedup: float | None  # baseline time to target / this label's


@dataclass(frozen=True)
class Summary:
    """The table and the line that says what went into it."""

    rows: tuple[SummaryRow, ...]
    target: float | None
    baseline: str | None
    intro: str


def parse_run(events: Sequence[dict[str, Any]], name: str) -> Run:
    """A run from its events (``read_events``); ``name`` is its directory's name."""
    begins = [i for i, e in enumerate(events) if e.get("event") == EventName.JOB_BEGIN]
    if not begins:
        raise ReportError(f"run {name}: the event log has no JOB_BEGIN")
    events = events[begins[-1] :]
    config = events[0]["data"].get("config", {})
    start = float(events[0]["ts"])
    closed: dict[int, dict[str, Any]] = {}
    tests: dict[int, dict[str, Any]] = {}
    seen: set[str] = set()
    online = 0
    for event in events:
        kind = event.get("event")
        data = event.get("data") or {}
        if kind in (EventName.ROUND_BEGIN, EventName.AGENTS_READY):
            seen.update(data.get("selected", []))
            online = max(online, int(data.get("online") or 0))
        elif kind in (EventName.ROUND_END, EventName.ROUND_FAILED):
            closed[int(event["round"])] = event
            seen.update(data.get("selected", []))
        elif kind == EventName.TEST_RESULT and data.get("accuracy") is not None:
            tests[int(event["round"])] = event
    rounds = tuple(_round_record(closed[r], start) for r in sorted(closed))
    for r, event in closed.items():  # a round's accuracy without its TEST_RESULT
        if r not in tests and event["data"].get("accuracy") is not None:
            tests[r] = event
    accuracy = tuple(
        AccuracyPoint(
            round=r,
            wall_time=float(tests[r]["ts"]) - start,
            virtual_time=tests[r].get("virtual_time"),
            accuracy=float(tests[r]["data"]["accuracy"]),
        )
        for r in sorted(tests)
    )
    # The fleet's size is not in the log: the most agents online at once, or all ever seen.
    kept = Counter(a for rec in rounds if rec.ok for a in rec.kept)
    population = max(online, len(seen | set(kept)))
    participation = sorted(kept.values(), reverse=True) + [0] * (population - len(kept))
    virtual = config.get("clock") == "virtual" and all(
        r.virtual_time is not None and r.virtual_duration is not None for r in rounds if r.ok
    )
    return Run(
        name=name,
        job=str(events[0].get("job", name)),
        selector=str((config.get("selector") or {}).get("name", "random")),
        adaptive=bool(config.get("adaptive_training", False)),
        virtual=virtual,
        rounds=rounds,
        accuracy=accuracy,
        participation=tuple(participation),
    )


def _round_record(event: dict[str, Any], start: float) -> RoundRecord:
    data = event["data"]
    return RoundRecord(
        round=int(event["round"]),
        ok=event["event"] == EventName.ROUND_END,
        wall_time=float(event["ts"]) - start,
        virtual_time=event.get("virtual_time"),
        wall_duration=float(data.get("duration") or 0.0),
        virtual_duration=data.get("virtual_duration"),
        upload_bytes=int(data.get("upload_bytes") or 0),
        upload_bytes_all=int(data.get("upload_bytes_all") or data.get("upload_bytes") or 0),
        kept=tuple(data.get("kept") or ()),
    )


def report_clock(runs: Iterable[Run]) -> Clock:
    """Virtual when every run has virtual time, else wall: one clock makes runs comparable."""
    return "virtual" if all(run.virtual for run in runs) else "wall"


def time_to_target(run: Run, target: float, clock: Clock) -> float | None:
    """Seconds until the first evaluation with accuracy >= target; None when never."""
    for point in run.accuracy:
        if point.accuracy >= target:
            return point.time(clock)
    return None


def group_runs(runs: Iterable[Run], by: str = "selector+adaptive") -> list[Group]:
    """Runs grouped by label, labels sorted, runs in their given order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label(by), []).append(run)
    return [Group(label, tuple(groups[label])) for label in sorted(groups)]


def speedup(baseline: float | None, time: float | None) -> float | None:
    """baseline time to target / this time; None unless both reached it."""
    if baseline is None or time is None or time <= 0:
        return None
    return baseline / time


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _median_time(times: Sequence[float | None]) -> float | None:
    """Median with 'not reached' as +inf: None when the median run did not reach it."""
    if not times:
        return None
    value = statistics.median(float("inf") if t is None else t for t in times)
    return None if value == float("inf") else value


def summarize(
    groups: Sequence[Group], clock: Clock, target: float | None, baseline: str | None
) -> list[SummaryRow]:
    times: dict[str, float | None] = {}
    rows = []
    for group in groups:
        ttts = [time_to_target(r, target, clock) for r in group.runs] if target is not None else []
        times[group.label] = _median_time(ttts)
        finals = [r.accuracy[-1].accuracy for r in group.runs if r.accuracy]
        means = [
            statistics.fmean(durations)
            for r in group.runs
            if (durations := [d for rec in r.rounds if (d := rec.duration(clock)) is not None])
        ]
        rows.append(
            SummaryRow(
                label=group.label,
                runs=len(group.runs),
                reached=sum(t is not None for t in ttts),
                time_to_target=times[group.label],
                final_accuracy=_median(finals),
                rounds=statistics.median(len(r.rounds) for r in group.runs),
                failed_rounds=statistics.median(
                    sum(not rec.ok for rec in r.rounds) for r in group.runs
                ),
                mean_round_duration=_median(means),
                upload_mb=statistics.median(
                    sum(rec.upload_bytes for rec in r.rounds) / MB for r in group.runs
                ),
                upload_mb_all=statistics.median(
                    sum(rec.upload_bytes_all for rec in r.rounds) / MB for r in group.runs
                ),
                speedup=None,
            )
        )
    if baseline is None or baseline not in times:
        return rows
    return [
        SummaryRow(**{**vars(row), "speedup": speedup(times[baseline], row.time_to_target)})
        for row in rows
    ]


def step_band(curves: Sequence[Sequence[tuple[float, float]]]) -> Band:
    """Median/min/max of sampled curves, each held at its last value until the next sample
    (and after its end); the grid is every sample time from the latest first sample on."""
    curves = [sorted(c) for c in curves if c]
    if not curves:
        return Band((), (), (), ())
    first = max(c[0][0] for c in curves)
    grid = sorted({x for c in curves for x, _ in c if x >= first})
    xs = [[x for x, _ in c] for c in curves]
    columns = []
    for x in grid:
        values = [c[bisect.bisect_right(cx, x) - 1][1] for c, cx in zip(curves, xs, strict=True)]
        columns.append((statistics.median(values), min(values), max(values)))
    return _band(grid, columns)


def round_band(series: Sequence[dict[int, float]]) -> Band:
    """Median/min/max per round over the runs that have that round."""
    rounds = sorted({r for s in series for r in s})
    columns = []
    for r in rounds:
        values = [s[r] for s in series if r in s]
        columns.append((statistics.median(values), min(values), max(values)))
    return _band([float(r) for r in rounds], columns)


def smoothing_window(rounds: int) -> int:
    """Rounds a per-round curve is averaged over: 1 (raw) up to 40 rounds, else odd ~rounds/20."""
    return 1 if rounds <= SMOOTH_AFTER else max(3, round(rounds / 20)) | 1


def rolling_mean(values: Sequence[float], window: int) -> tuple[float, ...]:
    """Centred moving average; near the ends the window shrinks to what is there."""
    half = window // 2
    return tuple(
        statistics.fmean(values[max(0, i - half) : i + half + 1]) for i in range(len(values))
    )


def rank_band(participations: Sequence[Sequence[int]], points: int = 1001) -> Band:
    """Participation curves on a common x: % of agents, ranked by rounds kept (descending)."""
    participations = [p for p in participations if p]
    if not participations:
        return Band((), (), (), ())
    grid = [100.0 * i / (points - 1) for i in range(points)]
    columns = []
    for pct in grid:
        values = [p[min(int(pct / 100 * len(p)), len(p) - 1)] for p in participations]
        columns.append((statistics.median(values), min(values), max(values)))
    return _band(grid, columns)


def _band(grid: Sequence[float], columns: Sequence[tuple[float, float, float]]) -> Band:
    return Band(
        tuple(grid),
        tuple(c[0] for c in columns),
        tuple(c[1] for c in columns),
        tuple(c[2] for c in columns),
    )


# -- text -----------------------------------------------------------------------------------------


def time_unit(seconds: Iterable[float | None]) -> tuple[float, str]:
    """One unit for a column of durations, from its largest: s, min or h."""
    top = max((v for v in seconds if v is not None), default=0.0)
    if top < 120:
        return 1.0, "s"
    return (60.0, "min") if top < 2 * 3600 else (3600.0, "h")


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def summary_table(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Headers (with the units) and one row of cells per label."""
    rows, target = summary.rows, summary.target
    ttt_scale, ttt_unit = time_unit(r.time_to_target for r in rows)
    round_scale, round_unit = time_unit(r.mean_round_duration for r in rows)
    headers = [
        "label",
        "runs",
        f"time to {target:.0%} ({ttt_unit})" if target is not None else "time to target",
        "final accuracy",
        "rounds",
        f"mean round ({round_unit})",
        "MB uploaded (kept / all)",
        f"speed-up vs {summary.baseline}" if summary.baseline else "speed-up",
    ]
    cells = []
    for row in rows:
        if target is None:
            ttt = "—"
        elif row.time_to_target is None:
            ttt = "not reached" + (f" ({row.reached}/{row.runs} runs did)" if row.reached else "")
        else:
            ttt = _number(row.time_to_target / ttt_scale)
            ttt += f" ({row.reached}/{row.runs} runs reached)" if row.reached < row.runs else ""
        mean_round = row.mean_round_duration
        cells.append(
            [
                row.label,
                str(row.runs),
                ttt,
                "—" if row.final_accuracy is None else f"{row.final_accuracy:.1%}",
                f"{row.rounds:g}"
                + (f" ({row.failed_rounds:g} failed)" if row.failed_rounds else ""),
                "—" if mean_round is None else _number(mean_round / round_scale),
                f"{_number(row.upload_mb)} / {_number(row.upload_mb_all)}",
                "—" if row.speedup is None else f"{row.speedup:.2f}×",
            ]
        )
    return headers, cells


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def describe(
    runs: Sequence[Run],
    groups: Sequence[Group],
    clock: Clock,
    target: float | None,
    baseline: str | None,
    sources: Sequence[str] = (),
) -> str:
    """The one line under the table: what went in and how to read it."""
    clock_text = "the virtual clock" if clock == "virtual" else "the wall clock since JOB_BEGIN"
    parts = [
        f"{_plural(len(runs), 'run')} in {_plural(len(groups), 'group')}"
        + (f" from {', '.join(sources)}" if sources else ""),
        f"times on {clock_text}",
        "medians over each group's runs",
        f"target accuracy {target:.0%}" if target is not None else "no target accuracy",
    ]
    if target is not None:
        parts.append(
            f"speed-up = {baseline}'s time to target / the label's"
            if baseline is not None
            else "no speed-up without a baseline label (--baseline)"
        )
    return "; ".join(parts) + "."


def markdown_summary(summary: Summary) -> str:
    headers, cells = summary_table(summary)
    lines = [
        "# Run report",
        "",
        summary.intro,
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


# -- plots ----------------------------------------------------------------------------------------

RC = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.titleweight": "bold",
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


@dataclass(frozen=True)
class Look:
    """How a label is drawn, the same in every plot."""

    colour: str
    width: float  # later labels thinner, so one drawn over an identical curve leaves it visible


def looks(labels: Sequence[str]) -> dict[str, Look]:
    if len(labels) <= len(PALETTE):
        palette = list(PALETTE[: len(labels)])
    else:
        from matplotlib import colormaps
        from matplotlib.colors import to_hex

        cmap = colormaps["tab20"]
        palette = [to_hex(cmap(i % cmap.N)) for i in range(len(labels))]
    return {
        label: Look(colour, max(1.4, 2.6 - 0.4 * i))
        for i, (label, colour) in enumerate(zip(labels, palette, strict=True))
    }


def _figure(ncols: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0 + 4.5 * (ncols - 1), 5.0), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, ncols, sharey=True, squeeze=False)[0])


def _draw(
    ax: Axes, band: Band, look: Look, label: str, *, steps: bool = False, dots: bool = False
) -> None:
    if not band.x:
        return
    ax.plot(
        band.x,
        band.median,
        color=look.colour,
        lw=look.width,
        label=label,
        drawstyle="steps-post" if steps else "default",
        marker="o" if dots else None,
        ms=3.5,
    )
    if band.low != band.high:
        ax.fill_between(
            band.x,
            band.low,
            band.high,
            color=look.colour,
            alpha=0.18,
            lw=0,
            step="post" if steps else None,
        )


def _save(fig: Figure, path: Path, note: str | None) -> None:
    """One legend right of the plots (all axes share the labels), then the PNG."""
    handles, labels = fig.axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside right upper",
            frameon=False,
            title=note,
            title_fontsize=9,
            alignment="left",
        )
    fig.savefig(path, dpi=DPI)


def _band_note(groups: Sequence[Group]) -> str | None:
    return (
        "line: median over runs\nshaded: min–max" if any(len(g.runs) > 1 for g in groups) else None
    )


def _draw_rounds(
    ax: Axes, series: Sequence[dict[int, float]], look: Look, label: str, rounds: int
) -> None:
    """A per-round quantity: the band, or with many rounds the median faint and its
    rolling mean bold (a band of noisy rounds hides more than it shows)."""
    band = round_band(series)
    window = smoothing_window(rounds)
    if window <= 1 or not band.x:
        _draw(ax, _with_gaps(band), look, label, dots=rounds <= DOTS_UP_TO)
        present = set(band.x)
        alone = [
            (x, y)
            for x, y in zip(band.x, band.median, strict=True)
            if x - 1 not in present and x + 1 not in present
        ]
        if alone:  # a round between failed ones has no line to sit on
            ax.plot(*zip(*alone, strict=True), "o", color=look.colour, ms=3.5)
        return
    ax.plot(band.x, band.median, color=look.colour, lw=0.8, alpha=0.35)
    smooth = rolling_mean(band.median, window)
    ax.plot(band.x, smooth, color=look.colour, lw=look.width, label=label)


def _with_gaps(band: Band) -> Band:
    """NaN where rounds are missing (a failed round kept nothing), so no line bridges them."""
    nan = float("nan")
    points: list[tuple[float, float, float, float]] = []
    for i, x in enumerate(band.x):
        if i and x - band.x[i - 1] > 1:
            points.append((x - 1, nan, nan, nan))
        points.append((x, band.median[i], band.low[i], band.high[i]))
    return Band(*(tuple(column) for column in zip(*points, strict=True))) if points else band


def _rounds_note(groups: Sequence[Group], window: int) -> str | None:
    if window <= 1:
        return _band_note(groups)
    several = " (median over runs)" if any(len(g.runs) > 1 for g in groups) else ""
    return f"faint: each round{several}\nbold: mean over {window} rounds"


def _max_rounds(groups: Sequence[Group]) -> int:
    return max((rec.round for g in groups for r in g.runs for rec in r.rounds), default=0)


def _max_evaluations(groups: Sequence[Group]) -> int:
    return max((len(r.accuracy) for g in groups for r in g.runs), default=0)


def _name(group: Group) -> str:
    return group.label + (f" ({len(group.runs)} runs)" if len(group.runs) > 1 else "")


def _percent_axis(ax: Axes) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def _round_axis(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _target_line(ax: Axes, target: float | None) -> None:
    if target is not None:
        ax.axhline(target, ls="--", lw=1.2, color="0.35", label=f"target {target:.0%}")


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
    fig, (ax,) = _figure()
    dots = _max_evaluations(groups) <= DOTS_UP_TO
    reached = False
    for group in groups:
        curves = [
            [(t / scale, p.accuracy) for p in run.accuracy if (t := p.time(clock)) is not None]
            for run in group.runs
        ]
        _draw(ax, step_band(curves), palette[group.label], _name(group), dots=dots)
        if target is not None:
            ttt = _median_time([time_to_target(r, target, clock) for r in group.runs])
            if ttt is not None:
                ax.plot(ttt / scale, target, "o", color=palette[group.label].colour, ms=7, zorder=5)
                reached = True
    _target_line(ax, target)
    if reached:
        ax.plot([], [], "o", color="0.35", ms=7, label="time to target")
    ax.set_title(f"Test accuracy vs {'virtual' if clock == 'virtual' else 'wall-clock'} time")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_xlim(left=0)
    _percent_axis(ax)
    _save(fig, path, _band_note(groups))


def plot_accuracy_vs_round(
    groups: Sequence[Group], palette: dict[str, Look], target: float | None, path: Path
) -> None:
    fig, (ax,) = _figure()
    dots = _max_evaluations(groups) <= DOTS_UP_TO
    for group in groups:
        curves = [[(float(p.round), p.accuracy) for p in run.accuracy] for run in group.runs]
        _draw(ax, step_band(curves), palette[group.label], _name(group), dots=dots)
    _target_line(ax, target)
    ax.set_title("Test accuracy vs round")
    _round_axis(ax)
    ax.set_ylabel("test accuracy")
    _percent_axis(ax)
    _save(fig, path, _band_note(groups))


def plot_round_duration(
    groups: Sequence[Group], palette: dict[str, Look], clock: Clock, path: Path
) -> None:
    """Duration per round; failed rounds (timeouts, too few updates) marked x."""
    fig, (ax,) = _figure()
    rounds = _max_rounds(groups)
    any_failed = False
    for group in groups:
        series = [
            {rec.round: d for rec in run.rounds if (d := rec.duration(clock)) is not None}
            for run in group.runs
        ]
        _draw_rounds(ax, series, palette[group.label], _name(group), rounds)
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
    _round_axis(ax)
    ax.set_ylabel(f"round duration ({clock} seconds)")
    ax.set_ylim(bottom=0)
    _save(fig, path, _rounds_note(groups, smoothing_window(rounds)))


def plot_upload_bytes(groups: Sequence[Group], palette: dict[str, Look], path: Path) -> None:
    """MB per round; a failed round keeps nothing, so it is left out of the kept panel."""
    fig, (kept_ax, all_ax) = _figure(ncols=2)
    rounds = _max_rounds(groups)
    for group in groups:
        kept = [
            {rec.round: rec.upload_bytes / MB for rec in r.rounds if rec.ok} for r in group.runs
        ]
        every = [{rec.round: rec.upload_bytes_all / MB for rec in r.rounds} for r in group.runs]
        _draw_rounds(kept_ax, kept, palette[group.label], _name(group), rounds)
        _draw_rounds(all_ax, every, palette[group.label], _name(group), rounds)
    kept_ax.set_title("Uploaded per round: kept updates")
    all_ax.set_title("Uploaded per round: all updates received")
    kept_ax.set_ylabel("MB per round (10⁶ bytes)")
    for ax in (kept_ax, all_ax):
        _round_axis(ax)
        ax.set_ylim(bottom=0)
    _save(fig, path, _rounds_note(groups, smoothing_window(rounds)))


def plot_participation(groups: Sequence[Group], palette: dict[str, Look], path: Path) -> None:
    """Agents ranked by how often they were kept: flat = fair, a cliff = a few favourites."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig, (ax,) = _figure()
    for group in groups:
        shares = [
            r.participation.count(0) / len(r.participation) for r in group.runs if r.participation
        ]
        never = f", {statistics.median(shares):.0%} never kept" if shares else ""
        band = rank_band([r.participation for r in group.runs])
        _draw(ax, band, palette[group.label], _name(group) + never, steps=True)
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
    _save(fig, path, _band_note(groups))


def render(groups: Sequence[Group], clock: Clock, target: float | None, out: Path) -> list[Path]:
    """Draw every plot into ``out``; groups come in legend order (colours follow it)."""
    import matplotlib

    out.mkdir(parents=True, exist_ok=True)
    palette = looks([g.label for g in groups])
    paths = [out / name for name in PLOTS]
    with matplotlib.rc_context(RC):
        plot_accuracy_vs_time(groups, palette, clock, target, paths[0])
        plot_accuracy_vs_round(groups, palette, target, paths[1])
        plot_round_duration(groups, palette, clock, paths[2])
        plot_upload_bytes(groups, palette, paths[3])
        plot_participation(groups, palette, paths[4])
    return paths


# -- command line ---------------------------------------------------------------------------------


def find_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Directories holding an events.jsonl: each path itself, or its children."""
    found: list[Path] = []
    for path in paths:
        if (path / "events.jsonl").is_file():
            found.append(path)
            continue
        children = sorted(log.parent for log in path.glob("*/events.jsonl"))
        if not children:
            raise ReportError(f"{path}: no events.jsonl in it or in a directory one level down")
        found += children
    return list(dict.fromkeys(found))


def load_runs(dirs: Sequence[Path]) -> list[Run]:
    return [parse_run(read_events(d / "events.jsonl"), d.name) for d in dirs]


def order_groups(groups: Sequence[Group], baseline: str | None) -> list[Group]:
    """The baseline first, the rest as given."""
    return sorted(groups, key=lambda g: g.label != baseline)


def choose_baseline(groups: Sequence[Group], wanted: str | None) -> str | None:
    labels = [g.label for g in groups]
    if wanted is None:
        return DEFAULT_BASELINE if DEFAULT_BASELINE in labels else None
    if wanted not in labels:
        raise ReportError(
            f"--baseline {wanted!r} is not a label of these runs: {', '.join(labels)}"
        )
    return wanted


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a fraction in (0, 1], e.g. 0.8 for 80%; got {text}")
    return value


def _print_table(summary: Summary) -> None:
    from rich.console import Console
    from rich.table import Table

    headers, cells = summary_table(summary)
    table = Table(title="Run report", caption=summary.intro, caption_justify="left")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in cells:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # piped or captured: rich would assume 80 columns
        console = Console(width=160)
    console.print(table)


def write_report(
    paths: Sequence[Path],
    out: Path,
    *,
    target: float | None = None,
    baseline: str | None = None,
    label_by: str = LABEL_BY[0],
) -> Summary:
    """Read the runs under ``paths``, draw the plots and write summary.md into ``out``."""
    runs = load_runs(find_run_dirs(paths))
    groups = group_runs(runs, label_by)
    baseline = choose_baseline(groups, baseline)
    groups = order_groups(groups, baseline)
    clock = report_clock(runs)
    summary = Summary(
        rows=tuple(summarize(groups, clock, target, baseline)),
        target=target,
        baseline=baseline,
        intro=describe(runs, groups, clock, target, baseline, [str(p) for p in paths]),
    )
    render(groups, clock, target, out)
    (out / "summary.md").write_text(markdown_summary(summary), encoding="utf-8")
    return summary


def _cmd_report(args: argparse.Namespace) -> int:
    try:
        summary = write_report(
            args.runs, args.out, target=args.target, baseline=args.baseline, label_by=args.label_by
        )
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "matplotlib":
            raise
        print("error: the plots need matplotlib: pip install 'fedbus[report]'", file=sys.stderr)
        return 1
    except (ReportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_table(summary)
    print(f"wrote {', '.join(PLOTS)} and summary.md to {args.out}/", flush=True)
    from coordinator import metrics_report  # a job's own metrics (compute packages)

    for line in metrics_report.write(find_run_dirs(args.runs), args.out):
        print(line, flush=True)
    return 0


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the report's arguments to ``parser`` (sets ``func``)."""
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="a run directory (holding events.jsonl) or a directory of run directories",
    )
    parser.add_argument("--out", type=Path, default=Path("report"), help="output directory")
    parser.add_argument(
        "--target", type=_fraction, help="target test accuracy, a fraction (0.8 for 80%%)"
    )
    parser.add_argument(
        "--baseline",
        help=f"label the speed-up is measured against (default: {DEFAULT_BASELINE!r} when present)",
    )
    parser.add_argument(
        "--label-by",
        choices=LABEL_BY,
        default=LABEL_BY[0],
        help="how runs are labelled and grouped (default: %(default)s)",
    )
    parser.set_defaults(func=_cmd_report)
    return parser


def run(args: argparse.Namespace) -> int:
    return int(args.func(args))


def main(argv: Sequence[str] | None = None) -> int:
    """``argv`` is what follows ``coordinator report``, e.g. ``["runs/sweep", "--target", "0.8"]``."""
    parser = configure(
        argparse.ArgumentParser(
            prog="coordinator report",
            description="Plots and a markdown summary from runs' event logs.",
        )
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
