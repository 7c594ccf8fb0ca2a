"""Structured job events: one JSON line per event in the run directory, and on the bus.

Event names are a small fixed set so logs and dashboards can rely on them.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fedbus.protocol.messages import Event, encode_json


class EventName(enum.StrEnum):
    JOB_BEGIN = "JOB_BEGIN"
    JOB_RESUMED = "JOB_RESUMED"
    AGENTS_READY = "AGENTS_READY"
    ROUND_BEGIN = "ROUND_BEGIN"
    ROUND_END = "ROUND_END"
    ROUND_FAILED = "ROUND_FAILED"
    TEST_RESULT = "TEST_RESULT"
    UPDATE_REJECTED = "UPDATE_REJECTED"
    AGENT_LOST = "AGENT_LOST"
    JOB_END = "JOB_END"
    JOB_FAILED = "JOB_FAILED"


Publish = Callable[[bytes], Awaitable[None]]
Listener = Callable[[Event], None]


class EventLog:
    def __init__(self, path: Path, job: str, publish: Publish | None = None) -> None:
        self.path = path
        self.job = job
        self.publish = publish
        self.listeners: list[Listener] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    async def emit(
        self,
        name: EventName,
        round_: int,
        data: dict[str, Any] | None = None,
        *,
        virtual_time: float | None = None,
    ) -> Event:
        event = Event(
            job=self.job,
            event=name.value,
            round=round_,
            ts=time.time(),
            virtual_time=virtual_time,
            data=data or {},
        )
        payload = encode_json(event)
        self._file.write(payload.decode() + "\n")
        self._file.flush()
        for listener in self.listeners:
            listener(event)
        if self.publish is not None:
            await self.publish(payload)
        return event

    def close(self) -> None:
        self._file.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    """All events of a run directory's log (a torn last line from a crash is skipped)."""
    events: list[dict[str, Any]] = []
    if not path.exists():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
