"""``coordinator report`` on the command line: find the runs, write the plots and summary.md,
print the table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from coordinator import metrics_report
from coordinator.device_report import plot_devices
from coordinator.report.plots import PLOTS, render
from coordinator.report.runs import (
    LABEL_BY,
    Group,
    ReportError,
    find_run_dirs,
    group_runs,
    load_runs,
    report_clock,
)
from coordinator.report.summary import Summary, describe, markdown_summary, summarize, summary_table

DEFAULT_BASELINE = "random"


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
    plot_devices(find_run_dirs(paths), out)  # per-device round time and energy
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
    for line in metrics_report.write(find_run_dirs(args.runs), args.out):
        print(line, flush=True)  # a job's own metrics (compute packages)
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
