"""What `coordinator serve` logs about jobs at INFO, and the event-log tail `jobs logs` reads."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from coordinator.config import parse_job
from coordinator.job_control import log_arrival, log_event, read_log_tail
from fedbus.protocol.messages import Event

JOB = {
    "name": "speech",
    "model": "fedbus.examples.digits:make_model",
    "data": "fedbus.examples.digits:load_partition",
    "rounds": 7,
    "num_participants": 10,
}


def test_arrivals_rounds_and_ends_are_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_job({**JOB, "requires": {"tags": ["lab"]}}, "<test>")
    with caplog.at_level(logging.INFO, logger="coordinator.jobs"):
        log_arrival(config, "srsf")
        log_event(Event(job="speech", event="ROUND_BEGIN", round=1, ts=0.0))
        data = {"kept": ["a", "b"], "selected": ["a", "b", "c"], "accuracy": 0.5, "duration": 1.5}
        log_event(Event(job="speech", event="ROUND_END", round=1, ts=0.0, data=data))
        log_event(
            Event(job="speech", event="ROUND_FAILED", round=2, ts=0.0, data={"reason": "late"})
        )
        log_event(Event(job="speech", event="JOB_END", round=7, ts=0.0))
    assert caplog.messages == [
        "job speech arrived: 7 rounds, 13 agents a round (needs 10), requires tags ['lab'], policy srsf",
        "job speech round 1 ended: 2 of 3 updates kept, accuracy 0.5000, 1.50s",
        "job speech round 2 failed: late",
        "job speech: JOB_END after round 7",
    ]


def test_the_log_tail_is_the_last_lines_or_none_without_a_log(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    assert read_log_tail(path, 5) is None
    path.write_text("".join(f"line {i}\n" for i in range(10)))
    assert read_log_tail(path, 3) == ["line 7", "line 8", "line 9"]
    assert read_log_tail(path, 0) == []
