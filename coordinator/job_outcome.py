"""What a served job's end looks like on the bus: its retained status and JOB_FAILED (pure).

``coordinator serve`` ends a job on several paths (finished, failed, refused at submit,
cancelled by an operator, stopped with the service); each publishes the job's retained
``JobStatus`` built here, from the runner's state when the job got that far.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from coordinator.events import EventLog, EventName
from coordinator.job_runner import JobRunner
from fedbus.protocol.messages import Event, JobStatus, encode_json


def job_status(
    job: str, state: str, runner: JobRunner | None, coordinator: str, reason: str | None = None
) -> bytes:
    """The retained status of ``job`` in ``state``: its progress when ``runner`` ran it."""
    flow = runner.flow if runner is not None else None
    status = JobStatus(
        job=job,
        state=state,  # type: ignore[arg-type]
        round=flow.completed_rounds if flow else 0,
        rounds=runner.config.rounds if runner else 0,
        model_version=flow.model_version if flow else 0,
        last_accuracy=flow.last_accuracy if flow else None,
        last_loss=flow.last_loss if flow else None,
        virtual_time=flow.virtual_time if flow else None,
        rejected=dict(runner.engine.rejected) if runner else {},
        ts=time.time(),
        reason=reason,
        coordinator=coordinator,
    )
    return encode_json(status)


def refusal_event(job: str, reason: str) -> bytes:
    """JOB_FAILED for a submission that never started."""
    data = {"reason": reason}
    return encode_json(
        Event(job=job, event=EventName.JOB_FAILED, round=0, ts=time.time(), data=data)
    )


def job_succeeded(history: list[dict[str, Any]]) -> bool:
    """A job that ran rounds succeeded when at least one of them did."""
    return not history or any(entry.get("ok") for entry in history)


def rounds_left(runner: JobRunner) -> int:
    """What the scheduler's SRSF policy ranks jobs by."""
    return runner.config.rounds - runner.flow.completed_rounds


def cancelling() -> bool:
    """The current task is being cancelled (the service stopping, not one job ending)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def failure_event(runner: JobRunner, reason: str) -> Event:
    """JOB_FAILED written to the run's event log and shown to the runner's listeners."""
    events = EventLog(runner.run_dir / "events.jsonl", runner.job, None)
    try:
        event = await events.emit(
            EventName.JOB_FAILED, runner.flow.completed_rounds, {"reason": reason}
        )
    finally:
        events.close()
    for listener in runner.events.listeners:
        with contextlib.suppress(Exception):  # a printer's fault must not hide the failure
            listener(event)
    return event
