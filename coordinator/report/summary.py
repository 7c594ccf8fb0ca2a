"""The summary table: one row per label (medians over its runs), as text or markdown.

Times are in s, min or h, whichever suits the longest, the same in the table and the plots.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from coordinator.report.runs import Clock, Group, Run, time_to_target

MB = 1e6


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


def speedup(baseline: float | None, time: float | None) -> float | None:
    """baseline time to target / this time; None unless both reached it."""
    if baseline is None or time is None or time <= 0:
        return None
    return baseline / time


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def median_time(times: Sequence[float | None]) -> float | None:
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
        times[group.label] = median_time(ttts)
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
