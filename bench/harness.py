"""Benchmark harness: one mosquitto, one emulated fleet, many jobs one after another.

    async with Bench(fleet, work_dir) as bench:     # broker up, every agent connected once
        run = await bench.run_job(job, runs_dir)    # a coordinator service, one job, its events
        print(run.time_to(0.8), run.final_accuracy)

Everything runs in this process and event loop: the coordinator service
(:class:`coordinator.service.CoordinatorService`, ``serve(exit_when_idle=True)``) and the
:class:`edge_agent.emulation.Emulator` that runs every fleet member as a real MQTT agent
with real SGD and time-model timings. The emulator connects once and serves every job;
its trainer keeps each agent's data partition across jobs with the same data arguments.
A job's run directory is ``runs_dir / name``: job names must be distinct (the coordinator
keys runs by name and resumes from a checkpoint it finds there, so an existing run
directory is removed first unless ``reuse`` asks to read a finished one back).

The helpers at the bottom turn events into what benchmarks print: the (virtual time,
accuracy) points of the TEST_RESULT events and the virtual time to a target accuracy.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from coordinator.broker_process import BrokerProcess
from coordinator.config import parse_job
from coordinator.events import read_events
from coordinator.service import CoordinatorService
from edge_agent.emulation import Emulator
from edge_agent.profile import DataSpec
from fedbus.fleet import Fleet, save_fleet
from fedbus.protocol import bus

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
HOUR = 3600.0


@dataclass(frozen=True)
class Point:
    """One validation: after ``round``, at ``virtual_time`` seconds, the global accuracy."""

    round: int
    virtual_time: float
    accuracy: float
    loss: float


@dataclass
class RunResult:
    """A finished job: its events and what benchmarks read from them."""

    name: str
    run_dir: Path
    events: list[dict[str, Any]]
    wall_s: float
    ok: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def points(self) -> list[Point]:
        return accuracy_points(self.events)

    def time_to(self, target: float, smooth: int = 1) -> float | None:
        """Virtual seconds until the first validation at or above ``target`` (None: never).

        ``smooth``: on the trailing mean of that many validations instead of each one.
        """
        hit = first_at_or_above(smoothed(self.points, smooth), target)
        return hit.virtual_time if hit else None

    def round_to(self, target: float, smooth: int = 1) -> int | None:
        hit = first_at_or_above(smoothed(self.points, smooth), target)
        return hit.round if hit else None

    @property
    def final_accuracy(self) -> float | None:
        points = self.points
        return points[-1].accuracy if points else None

    @property
    def rounds(self) -> int:
        return sum(1 for e in self.events if e["event"] == "ROUND_END")

    @property
    def failed_rounds(self) -> int:
        return sum(1 for e in self.events if e["event"] == "ROUND_FAILED")

    @property
    def virtual_time(self) -> float:
        """Virtual seconds at the end of the job (0 if it never ran a round)."""
        times = [e["virtual_time"] for e in self.events if e.get("virtual_time") is not None]
        return max(times, default=0.0)

    def round_durations(self) -> list[float]:
        return [
            e["data"]["virtual_duration"] or 0.0
            for e in self.events
            if e["event"] == "ROUND_END" and e["data"].get("virtual_duration") is not None
        ]


class Bench:
    """A broker and an emulated fleet that stay up while jobs run one after another."""

    def __init__(
        self,
        fleet: Fleet,
        work_dir: Path | None = None,
        *,
        threads: int = 1,
        connect_timeout: float = 120.0,
        data: DataSpec | None = None,
    ) -> None:
        """``data``: the jobs' data, so every agent reports its training-set size."""
        self.fleet = fleet
        self.data = data
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="fedbus-bench-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.fleet_path = self.work_dir / "fleet.json.gz"
        self.threads = threads
        self.connect_timeout = connect_timeout
        self.broker: BrokerProcess | None = None
        self.settings: bus.BrokerSettings | None = None
        self.emulator: Emulator | None = None
        self._emu_task: asyncio.Task[None] | None = None
        self.connect_s = 0.0

    async def __aenter__(self) -> Bench:
        torch.set_num_threads(self.threads)
        save_fleet(self.fleet_path, self.fleet)
        # A fresh broker state: a persisted session of an earlier bench (same coordinator
        # id, another prefix) would otherwise come back with its old subscriptions.
        shutil.rmtree(self.work_dir / "broker", ignore_errors=True)
        self.broker = BrokerProcess.create(self.work_dir / "broker")
        self.broker.start()
        self.settings = bus.BrokerSettings(
            port=self.broker.port, prefix=f"bench{uuid.uuid4().hex[:6]}", keepalive=30
        )
        try:
            began = time.monotonic()
            self.emulator = Emulator(self.fleet, self.settings, name="bench-emu", data=self.data)
            ready = asyncio.Event()
            self._emu_task = asyncio.create_task(self.emulator.run(connected=ready), name="emu")
            async with asyncio.timeout(self.connect_timeout):
                await ready.wait()
            self.connect_s = time.monotonic() - began
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self._emu_task is not None:
            self._emu_task.cancel()
            await asyncio.gather(self._emu_task, return_exceptions=True)
            self._emu_task = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def job(self, **fields: Any) -> dict[str, Any]:
        """A job mapping on this bench's fleet (virtual clock), ``fields`` on top."""
        return {"clock": "virtual", "fleet": str(self.fleet_path), **fields}

    async def run_job(
        self, job: dict[str, Any], runs_dir: Path, *, reuse: bool = False, timeout: float = 3600
    ) -> RunResult:
        """Run one job to its end with a fresh coordinator service; return its events.

        ``reuse``: a run directory that already holds this job's JOB_END is read back
        instead of run again (an interrupted study picks up where it stopped).
        """
        assert self.settings is not None, "use Bench as 'async with'"
        config = parse_job(job, f"<bench {job.get('name')}>")
        run_dir = runs_dir / config.name
        if reuse and _finished(run_dir):
            events = read_events(run_dir / "events.jsonl")
            return RunResult(config.name, run_dir, events, _wall(events), True, {"reused": True})
        if run_dir.exists():
            shutil.rmtree(run_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        service = CoordinatorService(
            self.settings,
            runs_dir=runs_dir,
            coordinator_id="bench-coordinator",
            accept_submissions=False,
        )
        service.submit(config)
        began = time.monotonic()
        async with asyncio.timeout(timeout):
            results = await service.serve(exit_when_idle=True)
        wall = time.monotonic() - began
        events = read_events(run_dir / "events.jsonl")
        return RunResult(config.name, run_dir, events, wall, bool(results.get(config.name)))


def _finished(run_dir: Path) -> bool:
    events = read_events(run_dir / "events.jsonl")
    return any(e["event"] == "JOB_END" for e in events)


def _wall(events: list[dict[str, Any]]) -> float:
    stamps = [e["ts"] for e in events]
    return max(stamps) - min(stamps) if stamps else 0.0


# -- reading events ---------------------------------------------------------------------
def accuracy_points(events: list[dict[str, Any]]) -> list[Point]:
    """Every TEST_RESULT as (round, virtual time, accuracy, loss), in order."""
    return [
        Point(
            e["round"],
            float(e.get("virtual_time") or 0.0),
            e["data"]["accuracy"],
            e["data"]["loss"],
        )
        for e in events
        if e["event"] == "TEST_RESULT"
    ]


def smoothed(points: list[Point], window: int) -> list[Point]:
    """Each validation's accuracy replaced by the mean of the last ``window`` (full windows).

    One evaluation of a non-IID federated model swings by a few points from round to round;
    a time to target read from single evaluations is mostly that noise. The trailing mean
    is as available to a user at that moment as the raw value (no look-ahead).
    """
    if window <= 1:
        return points
    out = []
    for i in range(window - 1, len(points)):
        mean = sum(p.accuracy for p in points[i - window + 1 : i + 1]) / window
        p = points[i]
        out.append(Point(p.round, p.virtual_time, mean, p.loss))
    return out


def first_at_or_above(points: list[Point], target: float) -> Point | None:
    return next((p for p in points if p.accuracy >= target), None)


def time_to_target(events: list[dict[str, Any]], target: float) -> float | None:
    """Virtual seconds until the first validation at or above ``target``; None: never."""
    hit = first_at_or_above(accuracy_points(events), target)
    return hit.virtual_time if hit else None


def median_or_none(values: list[float | None]) -> float | None:
    """Median over the runs that reached the target; None unless most of them did.

    A run that never reached it counts as +inf, so the median is finite only when more
    than half of the runs got there.
    """
    if not values:
        return None
    finite = sorted(v if v is not None else float("inf") for v in values)
    m = statistics.median(finite)
    return None if m == float("inf") else m


def fmt_hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / HOUR:.3f}"


def quiet_logs() -> None:
    """Warnings only, and not the agents' routine reconnect chatter."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # aiomqtt warns on every publish queued behind a full in-flight window (a validation
    # fans out to every agent at once): expected here, not news.
    for name in ("mqtt", "edge_agent"):
        logging.getLogger(name).setLevel(logging.ERROR)


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the broker this process started is stopped too."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
