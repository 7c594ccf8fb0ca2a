"""What the job's flow asks its adapter to do, and what comes back (sans-I/O commands).

The flow (:mod:`coordinator.round_flow`) yields one of these at a time; the adapter
(:class:`coordinator.job_runner.JobRunner`) carries it out and sends the result back in.
Results: :class:`SendTasks` -> ``dict[str, Assignment]``; :class:`Aggregate` -> ``bool``
(the new model is finite and taken); :class:`EvaluateOnServer` -> ``(loss, accuracy,
count)``; :class:`ReadClock` -> :class:`Clock`; :class:`ReadOnline` -> ``list[str]``;
:class:`Drain` -> ``float`` (seconds spent handling replies); :class:`GrantAgents` ->
``list[str]``; every other one -> ``None``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coordinator.events import EventName
from fedbus.protocol.messages import TrainConfig, ValidateRequest


@dataclass(frozen=True)
class Clock:
    monotonic: float  # deadlines and measured durations
    perf: float  # the coordinator's own time per step (ROUND_END timing)
    wall: float  # epoch seconds (selectors' time on the wall clock)


@dataclass(frozen=True)
class ReadClock:
    pass


@dataclass(frozen=True)
class ReadOnline:
    """The online agents now, from the registry."""


@dataclass(frozen=True)
class Emit:
    name: EventName
    round: int
    data: Mapping[str, Any]
    virtual_time: float | None = None


@dataclass(frozen=True)
class PublishStatus:
    state: str = "running"


@dataclass(frozen=True)
class PublishModel:
    pass


@dataclass(frozen=True)
class SaveCheckpoint:
    pass


@dataclass(frozen=True)
class CrashPoint:
    point: str
    round: int


@dataclass(frozen=True)
class SendTasks:
    round: int
    kind: str  # "train" | "validate"
    agents: list[str]
    configs: Mapping[str, TrainConfig]
    timeout: float
    wait: bool = True  # until the broker acknowledged them all
    validate_first: Mapping[str, ValidateRequest] = field(default_factory=dict)


@dataclass(frozen=True)
class GrantAgents:
    """Of ``candidates``, those the multi-job scheduler lets this job ask now (without a
    scheduler: all of them)."""

    candidates: list[str]


@dataclass(frozen=True)
class HoldAgents:
    """Tell the scheduler these agents have this job's tasks out (no scheduler: nothing)."""

    agents: list[str]


class Until(enum.Enum):
    ROUND_CLOSED = "round_closed"
    VALIDATION_CLOSED = "validation_closed"
    AGENT_JOINED = "agent_joined"  # or the deadline


@dataclass(frozen=True)
class Drain:
    """Feed replies to the round engine until ``until`` (AGENT_JOINED: or ``deadline``)."""

    until: Until
    deadline: float | None = None


@dataclass(frozen=True)
class PrepareRows:
    """Make (and zero) an aggregation stack of at least ``rows`` rows."""

    rows: int


@dataclass(frozen=True)
class Aggregate:
    """Aggregate ``rows`` into a new model; answered with :class:`Aggregated`."""

    rows: list[int]
    weights: list[float]
    norm_clip: float | None = None  # trust.norm_clip (#16): shrink outsized rows first


@dataclass(frozen=True)
class Aggregated:
    ok: bool  # False: the aggregate overflowed and the model was kept
    clipped: int = 0  # rows that norm_clip shrank


@dataclass(frozen=True)
class EvaluateOnServer:
    pass


Command = (
    ReadClock
    | ReadOnline
    | GrantAgents
    | HoldAgents
    | Emit
    | PublishStatus
    | PublishModel
    | SaveCheckpoint
    | CrashPoint
    | SendTasks
    | Drain
    | PrepareRows
    | Aggregate
    | EvaluateOnServer
)
