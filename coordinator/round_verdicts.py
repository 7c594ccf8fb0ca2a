"""What goes into the round engine and what comes out, beside its method calls.

Inputs carry the time the adapter read (the engine has no clock). A reply's verdict is
one of :class:`WriteRow` (admitted: write its tensors, then say ``row_written``),
:class:`Late` (a straggler's, dropped and counted), :class:`Refused` (rejected with the
slug the job status counts) or :class:`Dropped` (taken, nothing more to do).
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.round_state import Phase
from coordinator.update_check import Assignment
from fedbus.protocol.messages import ResultMeta, UpdateMeta


# -- inputs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AgentLost:
    """The agent's status went offline (``now``: when the adapter learned it)."""

    agent: str
    now: float


@dataclass(frozen=True)
class TimerFired:
    now: float


# -- verdicts ----------------------------------------------------------------------------
@dataclass(frozen=True)
class WriteRow:
    """Admitted: write the update's tensors into ``row``, then report ROW_WRITTEN/REJECTED."""

    agent: str
    row: int


@dataclass(frozen=True)
class Late:
    """A straggler's answer to a closed task, or from an agent given up for lost: dropped."""

    agent: str


@dataclass(frozen=True)
class Refused:
    """Rejected with a reason slug that the job status counts."""

    agent: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Dropped:
    """Taken, nothing more to do (a failure report, a result recorded, a loss noted)."""

    agent: str
    lost_from_round: bool = False  # an AGENT_LOST event is due


Verdict = WriteRow | Late | Refused | Dropped


@dataclass(frozen=True)
class Reply:
    """An admitted, written update: the row it is in and what the adapter measured."""

    agent: str
    meta: UpdateMeta
    row: int
    received: float
    nbytes: int


@dataclass(frozen=True)
class ClosedRound:
    """What the training collection ended with, for the adapter to aggregate."""

    round: int
    phase: Phase
    reason: str
    accepted: list[str]
    replies: dict[str, Reply]
    failures: dict[str, UpdateMeta]
    assignments: dict[str, Assignment]
    # Still training when the round closed (stragglers of an over-committed round), and
    # the round's deadline: they may answer late, until then.
    pending: frozenset[str] = frozenset()
    deadline: float | None = None


@dataclass(frozen=True)
class ClosedValidation:
    round: int
    results: dict[str, ResultMeta]
    assignments: dict[str, Assignment]
