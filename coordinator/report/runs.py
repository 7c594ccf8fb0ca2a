"""Runs read from event logs: one ``Run`` per run directory, grouped by label.

Extraction takes parsed events (``coordinator.events.read_events``) and returns plain frozen
dataclasses; it touches no matplotlib. A log with several JOB_BEGINs (a job started afresh in
a used run directory) is read from its last one; ROUND_ENDs re-emitted on resume count once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from coordinator.events import EventName, read_events

Clock = Literal["virtual", "wall"]
LABEL_BY = ("selector+adaptive", "dir", "job")


class ReportError(Exception):
    """Input the report cannot use; nothing was written."""


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
