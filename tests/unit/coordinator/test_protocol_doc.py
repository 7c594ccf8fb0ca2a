"""docs/protocol.md names every field the coordinator emits: ROUND_END, checkpoint, statuses.

The records are typed (``coordinator.round_record``, ``fedbus.protocol.messages``) and
every key written is one of their fields, so checking the fields checks what is emitted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from coordinator.round_record import CheckpointState, RoundEnd, RoundTiming
from fedbus.protocol.messages import AgentStatus, JobStatus, ModelMeta, Task

DOC = (Path(__file__).parents[3] / "docs" / "protocol.md").read_text()


def section(start: str, end: str) -> str:
    """The text of the doc from ``start`` up to the next ``end`` after it."""
    a = DOC.index(start)
    return DOC[a : DOC.index(end, a + len(start))]


SECTIONS: dict[str, tuple[list[type[BaseModel]], str]] = {
    "ROUND_END": ([RoundEnd, RoundTiming], section("| `ROUND_END` / `ROUND_FAILED`", "\n")),
    "checkpoint": ([CheckpointState], section("## 9a. Checkpoint", "\n## ")),
    "JobStatus": ([JobStatus], section("**JobStatus**", "\n\n")),
    "AgentStatus": ([AgentStatus], section("**AgentStatus**", "\n\n**")),
    "ModelMeta": ([ModelMeta], section("**ModelMeta**", "\n\n")),
    "Task": ([Task], section("**Task**", "\n\n**")),
}
COMMON = {"schema_version"}  # documented once for every message (§5)


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_emitted_field_is_documented(name: str) -> None:
    models, text = SECTIONS[name]
    fields = {f for model in models for f in model.model_fields} - COMMON
    missing = sorted(f for f in fields if f"`{f}`" not in text)
    assert missing == [], f"docs/protocol.md, {name}: fields not documented: {missing}"
