from __future__ import annotations

import pytest

from fedbus.protocol.errors import InvalidTopic
from fedbus.protocol.topics import TopicKind, Topics


def test_build_and_parse_are_inverse() -> None:
    t = Topics("lab/fedbus")
    cases = [
        (t.coordinator_status(), TopicKind.COORDINATOR_STATUS, None, None),
        (t.job_submit(), TopicKind.JOB_SUBMIT, None, None),
        (t.agent_status("a1"), TopicKind.AGENT_STATUS, "a1", None),
        (t.agent_tasks("a1"), TopicKind.AGENT_TASKS, "a1", None),
        (t.agent_telemetry("a1"), TopicKind.AGENT_TELEMETRY, "a1", None),
        (t.job_model("j"), TopicKind.JOB_MODEL, None, "j"),
        (t.job_update("j", "a1"), TopicKind.JOB_UPDATE, "a1", "j"),
        (t.job_result("j", "a1"), TopicKind.JOB_RESULT, "a1", "j"),
        (t.job_status("j"), TopicKind.JOB_STATUS, None, "j"),
        (t.job_events("j"), TopicKind.JOB_EVENTS, None, "j"),
    ]
    for topic, kind, agent, job in cases:
        parsed = t.parse(topic)
        assert (parsed.kind, parsed.agent, parsed.job) == (kind, agent, job)
    assert t.job_update("j", "a1") == "lab/fedbus/jobs/j/updates/a1"


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", "a b", "x" * 129, "é"])
def test_ids_with_separators_or_wildcards_are_refused(bad: str) -> None:
    with pytest.raises(InvalidTopic):
        Topics().agent_tasks(bad)


@pytest.mark.parametrize(
    "topic",
    ["other/agents/a/status", "fedbus/agents/a/b/status", "fedbus/jobs/j/updates", "fedbus/x"],
)
def test_foreign_topics_do_not_parse(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        Topics().parse(topic)
