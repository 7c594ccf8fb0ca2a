"""`edge-agent run --tag/--capacity`: what an agent advertises to the scheduler."""

from __future__ import annotations

import argparse

import pytest

from coordinator.eligibility import attributes_of
from edge_agent.cli import advertise, parse_capacity, parse_tag
from fedbus.protocol.messages import AgentProfile


def test_tags_and_capacity_reach_the_scheduler_attributes() -> None:
    profile = advertise(
        AgentProfile(ram_gb=8.0, num_samples=120),
        argparse.Namespace(tag=["lab-a", "solar"], capacity=2),
    )
    attributes = attributes_of("agent-1", profile)
    assert attributes.tags == frozenset({"lab-a", "solar"}) and attributes.capacity == 2
    assert (attributes.accelerator, attributes.memory_gb, attributes.num_samples) == (
        "cpu",
        8.0,
        120,
    )


@pytest.mark.parametrize("bad", ["a/b", "", "x" * 65, "lab#1"])
def test_a_bad_tag_is_refused_with_the_reason(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="tag"):
        parse_tag(bad)


@pytest.mark.parametrize("bad", ["0", "65", "-1", "two"])
def test_capacity_is_a_whole_number_from_1_to_64(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="capacity must be"):
        parse_capacity(bad)
    assert parse_capacity("3") == 3
