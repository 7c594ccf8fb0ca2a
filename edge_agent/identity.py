"""Who an agent is, and the hooks that replace how it trains and validates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.model_store import GlobalModel
from edge_agent.updates import UpdatePlan
from fedbus.protocol.messages import AgentProfile, Task


@dataclass(frozen=True)
class AgentIdentity:
    agent_id: str
    partition: int
    profile: AgentProfile


# Adaptive training and virtual clocks replace how a task is trained and timed.
TrainFn = Callable[[Task, GlobalModel, AgentIdentity], UpdatePlan]
# Another framework's evaluation (a Flower client's): (loss, accuracy, examples, metrics).
ValidateFn = Callable[
    [Task, GlobalModel, AgentIdentity], tuple[float, float, int, dict[str, float]]
]
