"""Refused messages: counted by reason, logged once per reason and interval."""

from __future__ import annotations

import logging

import pytest

from coordinator.config import JobConfigError
from coordinator.rejections import RejectionLog, reason_of
from fedbus.protocol.errors import InvalidMessage, InvalidTopic


def test_reasons() -> None:
    assert reason_of(InvalidMessage("schema", "x")) == "schema"
    assert reason_of(InvalidTopic("x")) == "invalid_topic"
    assert reason_of(JobConfigError("x")) == "bad_job"
    assert reason_of(RecursionError("x")) == "error:RecursionError"


def test_a_flood_is_counted_in_full_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rejections = RejectionLog(logging.getLogger("test.rejections"), interval=60.0)
    with caplog.at_level(logging.WARNING, "test.rejections"):
        for i in range(1000):
            rejections.record("t", InvalidMessage("malformed", "bad"), now=i * 0.01)
        rejections.record("t", InvalidMessage("schema", "bad"), now=10.0)
        rejections.record("t", InvalidMessage("malformed", "bad"), now=61.0)
    assert rejections.counts == {"malformed": 1001, "schema": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "and 999 more since the last report" in lines[2]
