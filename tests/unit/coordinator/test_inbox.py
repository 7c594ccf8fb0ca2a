"""A job's inbox: payload bytes capped per agent and in total, released as items leave."""

from __future__ import annotations

import pytest

from coordinator.inbox import BoundedInbox
from coordinator.job_runner import Inbound
from fedbus.protocol.errors import InvalidMessage


def item(agent: str, size: int) -> Inbound:
    return Inbound("update", agent, bytes(size))


def test_one_agent_cannot_queue_past_its_cap_and_others_still_get_in() -> None:
    inbox = BoundedInbox(per_agent=100, total=1000)
    inbox.offer(item("a", 60))
    with pytest.raises(InvalidMessage) as info:
        inbox.offer(item("a", 41))
    assert info.value.reason == "flooded"
    inbox.offer(item("b", 100))
    assert (inbox.queued_by("a"), inbox.queued_by("b"), inbox.queued_bytes) == (60, 100, 160)


def test_the_total_cap_holds_across_agents() -> None:
    inbox = BoundedInbox(per_agent=100, total=150)
    inbox.offer(item("a", 100))
    with pytest.raises(InvalidMessage, match="waiting for the job"):
        inbox.offer(item("b", 51))


def test_taking_an_item_frees_its_bytes() -> None:
    inbox = BoundedInbox(per_agent=100, total=1000)
    inbox.offer(item("a", 100))
    inbox.put_nowait(Inbound("lost", "a"))  # notices carry no payload and always fit
    assert inbox.get_nowait().agent == "a"
    assert inbox.queued_by("a") == 0 and inbox.queued_bytes == 0
    inbox.offer(item("a", 100))
    assert inbox.qsize() == 2
