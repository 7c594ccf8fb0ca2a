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

The package, in the order the data flows::

    runs.py      event logs -> Run (parse_run, group_runs, time_to_target, find_run_dirs)
    summary.py   groups -> the summary table (summarize, summary_table, markdown_summary)
    bands.py     curves -> median and min-max band on one grid (step_band, round_band, ...)
    canvas.py    how a label, a band, a legend and the axes are drawn (matplotlib Agg)
    plots.py     the five plots, and render() that writes them
    cli.py       ``coordinator report``: configure(), main(), write_report()

Extraction and the summary take parsed events and return plain dataclasses and touch neither
files nor matplotlib; rendering draws them on matplotlib's Agg canvas (no pyplot, no display).
matplotlib is the optional ``fedbus[report]`` dependency and is imported only to draw.

One clock for all runs in a report: virtual time when every run has it, else wall time since
each run's JOB_BEGIN (which includes waiting for agents, and any downtime before a resume).
Times are in s, min or h, whichever suits the longest, the same in the table and the plot.
A log with several JOB_BEGINs (a job started afresh in a used run directory) is read from its
last one; ROUND_ENDs re-emitted on resume count once.

Errors::

    ReportError    no event log under a path, a log without JOB_BEGIN, an unknown --baseline
"""

from coordinator.report.bands import (
    Band,
    rank_band,
    rolling_mean,
    round_band,
    smoothing_window,
    step_band,
)
from coordinator.report.cli import (
    DEFAULT_BASELINE,
    choose_baseline,
    configure,
    main,
    order_groups,
    run,
    write_report,
)
from coordinator.report.plots import PLOTS, render
from coordinator.report.runs import (
    LABEL_BY,
    AccuracyPoint,
    Clock,
    Group,
    ReportError,
    RoundRecord,
    Run,
    find_run_dirs,
    group_runs,
    load_runs,
    parse_run,
    report_clock,
    time_to_target,
)
from coordinator.report.summary import (
    Summary,
    SummaryRow,
    describe,
    markdown_summary,
    speedup,
    summarize,
    summary_table,
    time_unit,
)

__all__ = [
    "DEFAULT_BASELINE",
    "LABEL_BY",
    "PLOTS",
    "AccuracyPoint",
    "Band",
    "Clock",
    "Group",
    "ReportError",
    "RoundRecord",
    "Run",
    "Summary",
    "SummaryRow",
    "choose_baseline",
    "configure",
    "describe",
    "find_run_dirs",
    "group_runs",
    "load_runs",
    "main",
    "markdown_summary",
    "order_groups",
    "parse_run",
    "rank_band",
    "render",
    "report_clock",
    "rolling_mean",
    "round_band",
    "run",
    "smoothing_window",
    "speedup",
    "step_band",
    "summarize",
    "summary_table",
    "time_to_target",
    "time_unit",
    "write_report",
]
