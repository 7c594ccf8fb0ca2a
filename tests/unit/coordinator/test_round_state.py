"""Every transition of the round state machine, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.round_state import (
    Collection,
    IllegalTransition,
    JobPhase,
    Phase,
    advance,
)


def start(
    n: int = 4, target: int = 3, required: int = 2, deadline: float | None = 10.0
) -> Collection:
    return Collection.start(
        [f"a{i}" for i in range(n)], target=target, required=required, deadline=deadline
    )


def test_closes_complete_when_buffer_fills() -> None:
    c = start()
    assert c.accept("a0", 1.0) is Phase.WAITING
    assert c.accept("a2", 2.0) is Phase.WAITING
    assert c.accept("a1", 3.0) is Phase.COMPLETE
    assert c.accepted == ["a0", "a2", "a1"]  # arrival order: the first K are the fastest
    assert c.reason == "buffer full"


def test_timeout_with_enough_updates_completes() -> None:
    c = start()
    c.accept("a0", 1.0)
    c.accept("a1", 2.0)
    assert c.tick(9.9) is Phase.WAITING
    assert c.tick(10.0) is Phase.COMPLETE
    assert c.reason == "timeout"


def test_timeout_with_too_few_updates_fails() -> None:
    c = start()
    c.accept("a0", 1.0)
    assert c.tick(11.0) is Phase.FAILED
    assert "1 of 2" in c.reason


def test_losing_everyone_closes_without_waiting_for_the_deadline() -> None:
    c = start(n=3, target=3, required=2)
    c.accept("a0", 1.0)
    c.lose("a1", 1.5)
    assert c.phase is Phase.WAITING
    assert c.lose("a2", 2.0) is Phase.FAILED
    c2 = start(n=3, target=3, required=1)
    c2.accept("a0", 1.0)
    c2.lose("a1", 1.0)
    assert c2.lose("a2", 1.0) is Phase.COMPLETE


def test_all_replied_below_target_completes() -> None:
    c = start(n=3, target=5, required=1)  # target capped at the assigned count
    for a in ("a0", "a1"):
        c.accept(a, 1.0)
    c.lose("a2", 1.0)
    assert c.phase is Phase.COMPLETE


def test_illegal_events_raise_and_change_nothing() -> None:
    c = start()
    with pytest.raises(IllegalTransition):
        c.accept("stranger", 1.0)
    assert c.accepted == [] and c.phase is Phase.WAITING
    c.accept("a0", 1.0)
    with pytest.raises(IllegalTransition):
        c.accept("a0", 1.0)  # twice
    for a in ("a1", "a2"):
        c.accept(a, 1.0)
    assert c.closed
    for event in (lambda: c.accept("a3", 2.0), lambda: c.tick(20.0), lambda: c.lose("a3", 2.0)):
        with pytest.raises(IllegalTransition):
            event()
    assert c.phase is Phase.COMPLETE and c.accepted == ["a0", "a1", "a2"]


def test_lost_agent_that_is_not_pending_is_ignored() -> None:
    c = start()
    c.accept("a0", 1.0)
    c.lose("a0", 1.0)
    c.lose("nobody", 1.0)
    assert c.lost == set() and c.phase is Phase.WAITING


def test_no_deadline_never_times_out() -> None:
    c = start(deadline=None)
    assert c.tick(1e12) is Phase.WAITING


def test_empty_assignment_fails_at_once() -> None:
    assert Collection.start([], target=1, required=1, deadline=1.0).phase is Phase.FAILED


def test_job_phase_table() -> None:
    assert advance(JobPhase.PENDING, JobPhase.WAITING_FOR_AGENTS) is JobPhase.WAITING_FOR_AGENTS
    assert advance(JobPhase.TRAINING, JobPhase.VALIDATING) is JobPhase.VALIDATING
    with pytest.raises(IllegalTransition):
        advance(JobPhase.FINISHED, JobPhase.TRAINING)
    with pytest.raises(IllegalTransition):
        advance(JobPhase.PENDING, JobPhase.VALIDATING)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 12),
    events=st.lists(st.tuples(st.sampled_from(["accept", "lose"]), st.integers(0, 14))),
)
def test_is_pending_and_pending_count_agree_with_pending(
    n: int, events: list[tuple[str, int]]
) -> None:
    # Agents 12-14 were never assigned; events on them are refused (accept) or ignored.
    c = Collection.start([f"a{i}" for i in range(n)], target=n, required=1, deadline=None)
    for kind, i in events:
        agent = f"a{i}"
        if c.closed:
            break
        if kind == "accept":
            if c.can_accept(agent):
                c.accept(agent, 0.0)
            else:
                with pytest.raises(IllegalTransition):
                    c.accept(agent, 0.0)
        else:
            c.lose(agent, 0.0)
        for j in range(15):
            assert c.is_pending(f"a{j}") == (f"a{j}" in c.pending)
        assert c.pending_count == len(c.pending)
