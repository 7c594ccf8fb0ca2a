"""The round's phases and their legal transitions, as data (read by :mod:`round_engine`).

Two machines share one engine. Each row maps (phase, input) to the phases the input may
lead to; a pair that is absent is an illegal input there (:class:`IllegalTransition`,
nothing changed). A late, stale or duplicate reply is never illegal: the tables let it
through and the engine answers it with a verdict.

Training round::

    IDLE --open_round--> COLLECTING --(buffer full | all answered | deadline)--> CLOSED
    CLOSED --end_round--> IDLE

Validation (folded in train tasks, overlapped with the next round, or stand-alone: the
same states, only how an agent was asked differs)::

    NONE --open_validation--> OPEN --(all answered | lost | per-agent deadline)--> CLOSED
    CLOSED --finish_validation--> NONE
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from coordinator.round_state import IllegalTransition

__all__ = [
    "ROUND_TABLE",
    "VALIDATION_TABLE",
    "IllegalTransition",
    "InputKind",
    "RoundPhase",
    "ValidationPhase",
]


class RoundPhase(enum.Enum):
    IDLE = "idle"  # no training round open: between rounds, waiting for agents
    COLLECTING = "collecting"  # train tasks are out; updates are admitted
    CLOSED = "closed"  # the collection closed; its outcome is being recorded


class ValidationPhase(enum.Enum):
    NONE = "none"  # no validation outstanding
    OPEN = "open"  # results are admitted from the agents asked
    CLOSED = "closed"  # everyone answered, was lost or overdue; awaiting finish


class InputKind(enum.Enum):
    OPEN_ROUND = "open_round"
    UPDATE = "update"
    ROW_WRITTEN = "row_written"
    ROW_REJECTED = "row_rejected"
    RESULT = "result"
    AGENT_LOST = "agent_lost"
    TIMER = "timer"
    END_ROUND = "end_round"
    OPEN_VALIDATION = "open_validation"
    ASK = "ask"
    FINISH_VALIDATION = "finish_validation"


K = InputKind
_IDLE, _COLLECTING, _CLOSED = RoundPhase.IDLE, RoundPhase.COLLECTING, RoundPhase.CLOSED
_NONE, _OPEN, _DONE = ValidationPhase.NONE, ValidationPhase.OPEN, ValidationPhase.CLOSED


def _stay(phases: Iterable[enum.Enum], kinds: Iterable[InputKind]) -> dict[tuple, frozenset]:  # type: ignore[type-arg]
    """Rows where the input is legal and leaves the phase as it is."""
    return {(p, k): frozenset({p}) for p in phases for k in kinds}


_VALIDATION_INPUTS = (K.OPEN_VALIDATION, K.ASK, K.FINISH_VALIDATION)
ROUND_TABLE: Mapping[tuple[RoundPhase, InputKind], frozenset[RoundPhase]] = {
    (_IDLE, K.OPEN_ROUND): frozenset({_COLLECTING, _CLOSED}),  # CLOSED: nobody assigned
    (_COLLECTING, K.UPDATE): frozenset({_COLLECTING, _CLOSED}),  # a failure report closes
    (_COLLECTING, K.ROW_WRITTEN): frozenset({_COLLECTING, _CLOSED}),
    (_COLLECTING, K.ROW_REJECTED): frozenset({_COLLECTING}),
    (_COLLECTING, K.AGENT_LOST): frozenset({_COLLECTING, _CLOSED}),
    (_COLLECTING, K.TIMER): frozenset({_COLLECTING, _CLOSED}),
    (_CLOSED, K.END_ROUND): frozenset({_IDLE}),
    # Outside a collection: updates are late or stale, losses and timers are the
    # validation's; the validation's own inputs never move the training round.
    **_stay((_IDLE, _CLOSED), (K.UPDATE, K.AGENT_LOST, K.TIMER)),
    **_stay(RoundPhase, (K.RESULT, *_VALIDATION_INPUTS)),
}
"""Training round: (phase, input) -> the phases it may lead to. Absent: illegal."""

_REPLY_INPUTS = (K.RESULT, K.UPDATE, K.AGENT_LOST, K.TIMER)
VALIDATION_TABLE: Mapping[tuple[ValidationPhase, InputKind], frozenset[ValidationPhase]] = {
    (_NONE, K.OPEN_VALIDATION): frozenset({_OPEN, _DONE}),  # CLOSED: nobody to ask
    (_OPEN, K.ASK): frozenset({_OPEN}),
    **{(_OPEN, k): frozenset({_OPEN, _DONE}) for k in _REPLY_INPUTS},
    (_OPEN, K.END_ROUND): frozenset({_OPEN, _DONE}),  # in-update requests given up
    (_DONE, K.FINISH_VALIDATION): frozenset({_NONE}),
    **_stay((_OPEN,), (K.OPEN_ROUND, K.ROW_WRITTEN, K.ROW_REJECTED)),
    # Nothing outstanding, or everything in: the training round's inputs pass through.
    **_stay(
        (_NONE, _DONE), (*_REPLY_INPUTS, K.OPEN_ROUND, K.ROW_WRITTEN, K.ROW_REJECTED, K.END_ROUND)
    ),
}
"""Validation: (phase, input) -> the phases it may lead to. Absent: illegal."""
