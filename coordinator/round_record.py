"""Typed records of a job's rounds: the ROUND_END event's data and the checkpoint's state.

Both were untyped dicts; now every key the coordinator writes is a field here, checked
when it is written (a key not listed is a local fault: ``extra="forbid"``), and
docs/protocol.md is checked against these fields by a test. Keys that appear only in
some rounds (``keep_frac``/``steps`` when aggregated, ``eval_agents`` when validated by
agents, ``eval_examples`` by the coordinator) are left out of the dict when unset.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RoundTiming(BaseModel):
    """Where the coordinator's own time went in a round (training and waiting excluded)."""

    model_config = ConfigDict(extra="forbid")
    select_s: float = 0.0
    dispatch_s: float = 0.0
    ingest_s: float = 0.0
    aggregate_s: float = 0.0
    checkpoint_s: float = 0.0
    overhead_s: float = 0.0


class RoundEnd(BaseModel):
    """The data of ROUND_END / ROUND_FAILED, and the round's entry in the history."""

    model_config = ConfigDict(extra="forbid")
    round: int
    ok: bool
    reason: str
    selected: list[str]
    kept: list[str]
    stragglers: list[str]
    duration: float
    virtual_duration: float | None = None
    accuracy: float | None = None
    loss: float | None = None
    train_loss: float | None = None
    upload_bytes: int = 0
    failed: list[str] = Field(default_factory=list)
    durations: dict[str, float] = Field(default_factory=dict)
    update_bytes: dict[str, int] = Field(default_factory=dict)
    keep_frac_all: dict[str, float] = Field(default_factory=dict)
    upload_bytes_all: int = 0
    timing: RoundTiming | None = None
    keep_frac: dict[str, float] | None = None
    steps: dict[str, int] | None = None
    eval_agents: int | None = None
    eval_examples: int | None = None
    # The real agents' side (#17): why updates failed, what they measured of themselves.
    failure_reasons: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, dict[str, float]] = Field(default_factory=dict)
    # Agents that cannot run the job's code, never dispatched again (#18).
    excluded: dict[str, str] | None = None
    # Custom metrics of compute packages (#18): summaries and each agent's numbers.
    train_metrics: dict[str, dict[str, float]] | None = None
    train_metrics_by_agent: dict[str, dict[str, float]] | None = None
    metrics: dict[str, dict[str, float]] | None = None
    metrics_by_agent: dict[str, dict[str, float]] | None = None
    # What the job-level budget pacer did after the round (#22): before, after, move.
    budget: dict[str, Any] | None = None
    # Trust limits (#16): the agents' validations summarised beside the capped weighted
    # mean, and how many kept updates trust.norm_clip shrank.
    accuracy_median: float | None = None
    accuracy_spread: float | None = None
    clipped: int | None = None


SOMETIMES = (
    "timing",
    "keep_frac",
    "steps",
    "eval_agents",
    "eval_examples",
    "excluded",
    "train_metrics",
    "train_metrics_by_agent",
    "metrics",
    "metrics_by_agent",
    "budget",
    "accuracy_median",
    "accuracy_spread",
    "clipped",
)
"""RoundEnd keys written only when they have a value."""


def round_entry(record: RoundEnd) -> dict[str, Any]:
    """The record as the history entry (and event data) it is written as."""
    entry = record.model_dump()
    for key in SOMETIMES:
        if entry[key] is None:
            del entry[key]
    return entry


def checked_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` after checking that it is a RoundEnd (raises ValidationError otherwise)."""
    RoundEnd.model_validate(entry)
    return entry


class CheckpointState(BaseModel):
    """``checkpoint/state.json``: everything a resumed job needs besides the model file."""

    model_config = ConfigDict(extra="forbid")
    job: str
    completed_rounds: int
    model_version: int
    history: list[dict[str, Any]]  # RoundEnd entries (older checkpoints: fewer keys)
    rejected: dict[str, int] = Field(default_factory=dict)
    virtual_time: float | None = None
    last_accuracy: float | None = None
    last_loss: float | None = None
    registered: list[str] = Field(default_factory=list)
    selector: dict[str, Any] = Field(default_factory=dict)
    rng: list[Any] = Field(default_factory=list)
    budget: dict[str, Any] | None = None  # the job-level budget pacer's state
    model_file: str = ""  # written by coordinator.checkpoint.save
