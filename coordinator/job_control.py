"""What `coordinator serve` logs and answers about its jobs (no MQTT here).

:func:`log_event` is an event listener that logs a job's rounds and end at INFO, so a
person running ``coordinator serve`` sees jobs arrive, wait, progress and finish;
:func:`read_log_tail` and the ``*_reply`` builders answer ``coordinator jobs cancel|logs``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from pathlib import Path

from coordinator.config import JobConfig
from fedbus.protocol.messages import ControlReply, Event, JobControl

# The lines a person running `coordinator serve` reads: on at INFO even without -v.
log = logging.getLogger("coordinator.jobs")


def log_arrival(config: JobConfig, policy: str) -> None:
    log.info(
        "job %s arrived: %d rounds, %d agents a round (needs %d), requires %s, policy %s",
        config.name,
        config.rounds,
        config.dispatch_count,
        config.agents_needed,
        config.requires.describe(),
        policy,
    )


def log_event(event: Event) -> None:
    """One INFO line per round end, failure and job end."""
    d = event.data
    if event.event == "ROUND_END":
        acc = d.get("accuracy")
        log.info(
            "job %s round %d ended: %d of %d updates kept, accuracy %s, %.2fs",
            event.job,
            event.round,
            len(d.get("kept", [])),
            len(d.get("selected", [])),
            "-" if acc is None else f"{acc:.4f}",
            d.get("duration", 0.0),
        )
    elif event.event == "ROUND_FAILED":
        log.info("job %s round %d failed: %s", event.job, event.round, d.get("reason"))
    elif event.event in ("JOB_END", "JOB_FAILED"):
        log.info("job %s: %s after round %d", event.job, event.event, event.round)


def cancel_reply(request: JobControl, *, running: bool) -> ControlReply:
    if not running:
        return ControlReply(
            job=request.job, action="cancel", ok=False, message=f"job {request.job} is not running"
        )
    return ControlReply(
        job=request.job, action="cancel", ok=True, message=f"job {request.job} cancelled"
    )


def logs_reply(request: JobControl, lines: list[str] | None) -> ControlReply:
    if lines is None:
        return ControlReply(
            job=request.job, action="logs", ok=False, message=f"no event log for job {request.job}"
        )
    return ControlReply(job=request.job, action="logs", ok=True, lines=lines)


def read_log_tail(path: Path, lines: int) -> list[str] | None:
    """The last ``lines`` lines of an event log; None when there is none."""
    try:
        with path.open(encoding="utf-8") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=lines)] if lines else []
    except OSError:
        return None


async def answer(request: JobControl, runs_dir: Path, *, running: bool) -> ControlReply:
    """The reply to ``coordinator jobs cancel|logs`` (the cancel itself is the service's)."""
    if request.action == "cancel":
        return cancel_reply(request, running=running)
    path = runs_dir / request.job / "events.jsonl"
    return logs_reply(request, await asyncio.to_thread(read_log_tail, path, request.tail))
