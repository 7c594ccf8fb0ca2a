"""What ``bench/ingest.py`` sees of the in-process coordinator, without changing it.

A hook on paho's ``_sock_recv`` notes every socket read of the coordinator's client (the
first byte of each PUBLISH), an instrumented inbox notes each message handed to the runner,
a lag probe sleeps 10 ms in a loop and records each overshoot, GC callbacks note every
collection, and ``stall_watch`` (``--stalls``) samples the loop thread's stack during stalls.
These are bench probes: the coordinator under test never installs them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from coordinator.job_runner import Inbound, JobRunner
from coordinator.service import CoordinatorService


@dataclass
class Stall:
    """A stall of the coordinator's loop over 40 ms, seen by ``stall_watch``."""

    end: float  # perf_counter when the loop ran again
    lag: float  # the lag probe's overshoot
    cpu: float  # of it, seconds the loop thread ran on a CPU
    runq: float  # seconds it was runnable but other threads or processes had the CPUs
    stacks: list[str]  # the loop thread's stacks sampled during the stall, in order
    busy: dict[str, float]  # other threads of this process: seconds on a CPU meanwhile
    others: dict[str, list[str]]  # their stacks sampled meanwhile

    @property
    def blocked(self) -> float:
        """Neither running nor runnable: waiting for the GIL, or in a system call."""
        return max(0.0, self.lag + 0.010 - self.cpu - self.runq)


@dataclass
class Recorder:
    """What the bench sees of the in-process coordinator (all times perf_counter)."""

    client_prefix: bytes
    recvs: list[float] = field(default_factory=list)
    recv_bytes: list[int] = field(default_factory=list)
    # Reads of a PUBLISH packet's first byte (its command byte): during a round, updates.
    publish_starts: list[float] = field(default_factory=list)
    task_acks: list[float] = field(default_factory=list)
    model_publishes: list[float] = field(default_factory=list)
    inbox: list[tuple[float, str, int]] = field(default_factory=list)
    round_begins: dict[int, float] = field(default_factory=dict)
    lag: list[tuple[float, float]] = field(default_factory=list)  # (sleep end, overshoot)
    # The loop thread's schedstat at each lag sample: what it ran between two samples is an
    # upper bound on how long its own work held it; the rest of a lag is waiting for a CPU.
    sched: list[tuple[int, int]] = field(default_factory=list)
    slow_callbacks: list[str] = field(default_factory=list)
    # (end, pause, generation) of every cyclic-GC run in this process: a collection holds
    # the GIL, so it stalls the event loop whichever thread triggered it.
    gc_runs: list[tuple[float, float, int]] = field(default_factory=list)
    _gc_began: float = 0.0
    last_tick: float = 0.0  # the lag probe's last wake-up
    stalls: list[Stall] = field(default_factory=list)  # --stalls: loop stalls over 40 ms

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_began = now
        else:
            self.gc_runs.append((now, now - self._gc_began, int(info["generation"])))


class _InstrumentedInbox(asyncio.Queue):  # type: ignore[type-arg]
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def put_nowait(self, item: Inbound) -> None:
        self.recorder.inbox.append((time.perf_counter(), item.kind, len(item.payload)))
        super().put_nowait(item)


_RECORDERS: list[Recorder] = []


def install_recv_hook(recorder: Recorder) -> None:
    """Note the time of every socket read of the coordinator's client (once per process)."""
    if not _RECORDERS:
        original = mqtt.Client._sock_recv

        def _sock_recv(self: mqtt.Client, bufsize: int) -> bytes:
            # paho reads a packet's command byte alone, when it has no packet under way.
            command_read = self._in_packet["command"] == 0
            data = original(self, bufsize)
            current = _RECORDERS[-1]
            if data and bytes(self._client_id).startswith(current.client_prefix):
                now = time.perf_counter()
                current.recvs.append(now)
                current.recv_bytes.append(len(data))
                if command_read and data[0] & 0xF0 == 0x30:  # PUBLISH
                    current.publish_starts.append(now)
            return data

        mqtt.Client._sock_recv = _sock_recv  # type: ignore[method-assign]
    _RECORDERS.append(recorder)


class TimedService(CoordinatorService):
    """The real service; ``publish`` notes when task publishes return and models go out."""

    recorder: Recorder
    task_topics: set[str]
    model_topics: set[str]

    async def publish(self, topic: str, *args: Any, **kwargs: Any) -> None:
        if topic in self.model_topics:
            self.recorder.model_publishes.append(time.perf_counter())
        await super().publish(topic, *args, **kwargs)
        if topic in self.task_topics:
            self.recorder.task_acks.append(time.perf_counter())


def _thread_schedstat() -> tuple[int, int]:
    """This thread's (ns on a CPU, ns runnable but waiting for one); zeros off Linux."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            run, wait, _ = f.read().split()
        return int(run), int(wait)
    except (OSError, ValueError):
        return 0, 0


async def lag_probe(recorder: Recorder, period: float = 0.010) -> None:
    while True:
        t = time.perf_counter()
        await asyncio.sleep(period)
        end = time.perf_counter()
        recorder.last_tick = end
        recorder.lag.append((end, end - t - period))
        recorder.sched.append(_thread_schedstat())


def _schedstats() -> dict[int, tuple[int, int]]:
    """Per thread of this process: (ns on a CPU, ns runnable but waiting for one)."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            run, wait, _ = (task / "schedstat").read_text().split()
            out[int(task.name)] = (int(run), int(wait))
        except (OSError, ValueError):
            continue
    return out


def _where(frame: Any, depth: int = 5) -> str:
    stack = traceback.extract_stack(frame)[-depth:]
    return " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))


def stall_watch(recorder: Recorder, loop_thread: int, loop_tid: int, stop: threading.Event) -> None:
    """Watch the loop for stalls over 40 ms (``--stalls``) and say what each one was.

    Runs in its own thread, every 5 ms: during a stall it samples the stacks of the loop
    thread and of the other threads (it gets the GIL at the next switch interval unless a
    C call holds it throughout, a GC run or a bytes copy; then the next sample shows who
    called it), and from schedstat how much of the stall the loop thread spent on a CPU,
    waiting for one (other processes), and neither (blocked: on the GIL, or in a system
    call), and which other threads of this process ran meanwhile.
    """
    me = threading.get_native_id()
    history: list[tuple[float, dict[int, tuple[int, int]]]] = []  # samples before a stall
    began: float | None = None
    base: dict[int, tuple[int, int]] = {}
    stacks: list[str] = []
    others: dict[str, list[str]] = {}
    while not stop.wait(0.005):
        tick = recorder.last_tick
        now = time.perf_counter()
        if began is not None and tick != began:
            stats = _schedstats()
            names = {t.native_id: t.name for t in threading.enumerate()}
            now_loop, then_loop = stats.get(loop_tid, (0, 0)), base.get(loop_tid, (0, 0))
            run, wait = now_loop[0] - then_loop[0], now_loop[1] - then_loop[1]
            busy = {
                names.get(tid, str(tid)): (stats[tid][0] - base.get(tid, (0, 0))[0]) / 1e9
                for tid in stats
                if tid not in (loop_tid, me)
            }
            recorder.stalls.append(
                Stall(tick, tick - began - 0.010, run / 1e9, wait / 1e9, stacks, busy, others)
            )
            began, history = None, []
        if began is None:
            if tick and now - tick > 0.040:
                began, stacks, others = tick, [], {}
                before = [h for h in history if h[0] <= tick]
                base = before[-1][1] if before else _schedstats()
            else:
                history = [*history[-20:], (now, _schedstats())]
                continue
        frames = sys._current_frames()
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in frames.items():
            if ident == threading.get_ident():
                continue
            seen = (
                stacks
                if ident == loop_thread
                else others.setdefault(names.get(ident, str(ident)), [])
            )
            where = _where(frame, 5 if ident == loop_thread else 3)
            if not seen or seen[-1] != where:
                seen.append(where)


class SlowCallbacks(logging.Handler):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__(logging.WARNING)
        self.recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "took" in message and "seconds" in message:
            # "Executing <Task ... coro=<...> ...> took 0.123 seconds": keep the name and time.
            head = message.split(" created at ")[0].split(" wait_for=")[0]
            self.recorder.slow_callbacks.append(f"{head[:160]} ... {message[-22:]}")


def attach(runner: JobRunner, recorder: Recorder) -> None:
    runner.inbox = _InstrumentedInbox(recorder)

    def listen(event: Any) -> None:
        if event.event == "ROUND_BEGIN":
            recorder.round_begins[event.round] = time.perf_counter()

    runner.events.listeners.append(listen)
