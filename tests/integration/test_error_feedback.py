"""Error feedback over a real broker: top-k at keep 0.1 with memory trains as well as dense.

Four real agents (own MQTT connections, real PyTorch on digits) and every one of them
trains every round, so selection plays no part: the runs differ only in what the agents
upload. PyramidFL's gradient dropout, pinned at 0.8 of the upload bytes for every rank,
makes every update a top-10 % sparse payload (an index per value: 10 % of the entries are
20 % of the dense bytes); the dense run switches that dropout off.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from coordinator.events import read_events
from coordinator.service import CoordinatorService
from fedbus.protocol import bus

from .conftest import job_config, running_agents

AGENTS = 4
ROUNDS = 100
DATA_ARGS = {"num_partitions": AGENTS, "alpha": 0.5, "seed": 0}


async def final_accuracy(
    settings: bus.BrokerSettings, runs: Path, name: str, *, dropout: float | None, feedback: bool
) -> tuple[list[float], list[dict[str, Any]]]:
    selector: dict[str, Any] = {
        "name": "pyramidfl",
        "seed": 1,
        "enable_adapt_local_epoch": False,
        "enable_dropout": dropout is not None,
    }
    if dropout is not None:
        selector.update(dropout_low=dropout, dropout_high=dropout)
    config = job_config(
        name=name,
        data_args=DATA_ARGS,
        test_data="fedbus.examples.digits:load_test",
        test_data_args=DATA_ARGS,
        rounds=ROUNDS,
        num_participants=AGENTS,
        min_agents=AGENTS,
        local_steps=10,
        batch_size=16,
        learning_rate=0.05,
        eval_interval=10,
        selector=selector,
        error_feedback=feedback,
        seed=3,
    )
    service = CoordinatorService(settings, runs_dir=runs)
    service.submit(config)
    async with asyncio.timeout(300):
        assert await service.serve(exit_when_idle=True) == {name: True}
    events = read_events(runs / name / "events.jsonl")
    ends = [e["data"] for e in events if e["event"] == "ROUND_END"]
    return [float(e["accuracy"]) for e in ends if e.get("accuracy") is not None], ends


async def test_sparse_with_error_feedback_reaches_the_dense_accuracy(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    async with running_agents(settings, AGENTS):
        dense, dense_ends = await final_accuracy(
            settings, tmp_path, "dense", dropout=None, feedback=False
        )
        sparse_ef, ef_ends = await final_accuracy(
            settings, tmp_path, "sparse-ef", dropout=0.8, feedback=True
        )
        sparse, _ = await final_accuracy(settings, tmp_path, "sparse", dropout=0.8, feedback=False)
    print(
        f"accuracy every 10 rounds: dense {dense}\n top-10% + error feedback {sparse_ef}\n top-10% {sparse}"
    )
    # Every aggregated update really was a 10 % payload, and the dense ones were dense.
    assert all(abs(k - 0.1) < 1e-9 for e in ef_ends for k in e["keep_frac"].values())
    assert all(set(e["keep_frac"].values()) == {1.0} for e in dense_ends)
    assert sum(e["upload_bytes"] for e in ef_ends) < 0.25 * sum(
        e["upload_bytes"] for e in dense_ends
    )
    assert len(dense) == len(sparse_ef) == len(sparse) == ROUNDS // 10
    assert dense[-1] > 0.9  # the dense run learned (a guess scores 0.1)
    assert sparse_ef[-1] >= dense[-1] - 0.005
    # The memory is what closes the gap: plain top-10 % learns more slowly all along.
    assert sum(sparse) < sum(sparse_ef)
