"""How the report draws: the look per label, the figure, a band, the legend, the axes.

matplotlib's Agg canvas only (no pyplot, no display); matplotlib is imported inside the
functions, so the rest of the report works without the optional ``fedbus[report]`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.report.bands import Band, rolling_mean, round_band, smoothing_window
from coordinator.report.runs import Group

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 150
DOTS_UP_TO = 20  # points; shorter curves mark each point (an evaluation, a round)
# Okabe-Ito: distinguishable with colour-blindness and in greyscale print; yellow left out.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

RC: dict[str, Any] = {
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


def new_figure(ncols: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0 + 4.5 * (ncols - 1), 5.0), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, ncols, sharey=True, squeeze=False)[0])


def draw_band(
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


def save_figure(fig: Figure, path: Path, note: str | None) -> None:
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


def band_note(groups: Sequence[Group]) -> str | None:
    return (
        "line: median over runs\nshaded: min–max" if any(len(g.runs) > 1 for g in groups) else None
    )


def draw_rounds(
    ax: Axes, series: Sequence[dict[int, float]], look: Look, label: str, rounds: int
) -> None:
    """A per-round quantity: the band, or with many rounds the median faint and its
    rolling mean bold (a band of noisy rounds hides more than it shows)."""
    band = round_band(series)
    window = smoothing_window(rounds)
    if window <= 1 or not band.x:
        draw_band(ax, _with_gaps(band), look, label, dots=rounds <= DOTS_UP_TO)
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


def rounds_note(groups: Sequence[Group], window: int) -> str | None:
    if window <= 1:
        return band_note(groups)
    several = " (median over runs)" if any(len(g.runs) > 1 for g in groups) else ""
    return f"faint: each round{several}\nbold: mean over {window} rounds"


def max_rounds(groups: Sequence[Group]) -> int:
    return max((rec.round for g in groups for r in g.runs for rec in r.rounds), default=0)


def max_evaluations(groups: Sequence[Group]) -> int:
    return max((len(r.accuracy) for g in groups for r in g.runs), default=0)


def legend_name(group: Group) -> str:
    return group.label + (f" ({len(group.runs)} runs)" if len(group.runs) > 1 else "")


def percent_axis(ax: Axes) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def round_axis(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def target_line(ax: Axes, target: float | None) -> None:
    if target is not None:
        ax.axhline(target, ls="--", lw=1.2, color="0.35", label=f"target {target:.0%}")
