"""Evaluation on a real mosquitto: validation overlapped with the next round, and on the server."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from coordinator import checkpoint
from coordinator.events import read_events
from coordinator.service import CoordinatorService
from edge_agent.torch_state import load_numpy_state
from edge_agent.trainer import evaluate_model
from fedbus.examples.digits import load_test, make_model
from fedbus.protocol import bus
from fedbus.protocol.messages import ResultMeta, Task, UpdateMeta, decode_envelope
from fedbus.protocol.topics import TopicKind, Topics

from .conftest import job_config, running_agents, wait_until

ROUNDS = 4
DATA_ARGS = {"num_partitions": 4, "alpha": 0.5, "seed": 0}


async def run(settings: bus.BrokerSettings, runs: Path, **overrides: Any) -> list[dict[str, Any]]:
    # A prefix of its own per run: the runs share the broker, not retained models or sessions.
    settings = dataclasses.replace(settings, prefix=f"{settings.prefix}{runs.name}")
    config = job_config(
        rounds=ROUNDS,
        num_participants=4,  # every agent trains and every update is kept: runs comparable
        overcommitment=1.0,
        data_args=DATA_ARGS,
        selector={"name": "random", "seed": 5},
        **overrides,
    )
    service = CoordinatorService(settings, runs_dir=runs)
    service.submit(config)
    async with running_agents(settings, 4), asyncio.timeout(90):
        assert await service.serve(exit_when_idle=True) == {"itest": True}
    return read_events(runs / "itest" / "events.jsonl")


def positions(events: list[dict[str, Any]], name: str) -> dict[int, int]:
    return {e["round"]: i for i, e in enumerate(events) if e["event"] == name}


def final_weights(run_dir: Path) -> dict[str, np.ndarray]:
    restored = checkpoint.load(run_dir / "checkpoint")
    assert restored is not None
    return restored[1]


async def test_overlapped_validation_gives_the_sequential_results_a_round_later(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Execute: the same seeded job with validation between rounds and alongside the next.
    sequential = await run(settings, tmp_path / "seq", eval_overlap=False)
    overlapped = await run(settings, tmp_path / "ovl", eval_overlap=True)
    # Assert: the same accuracies, ROUND_END events in round order, the same final model ...
    for events in (sequential, overlapped):
        ends = [e for e in events if e["event"] == "ROUND_END"]
        assert [e["round"] for e in ends] == list(range(1, ROUNDS + 1))
        assert all(e["data"]["eval_agents"] == 4 for e in ends)
        assert all("checkpoint_s" in e["data"]["timing"] for e in ends)  # emitted complete
        tests = [e["round"] for e in events if e["event"] == "TEST_RESULT"]
        assert tests == list(range(1, ROUNDS + 1))

    def accuracies(events: list[dict[str, Any]]) -> list[float]:
        return [e["data"]["accuracy"] for e in events if e["event"] == "ROUND_END"]

    assert accuracies(sequential) == accuracies(overlapped)
    seq_model, ovl_model = (
        final_weights(tmp_path / "seq" / "itest"),
        final_weights(tmp_path / "ovl" / "itest"),
    )
    assert all(np.array_equal(seq_model[k], ovl_model[k]) for k in seq_model)
    # ... but overlapped, round r + 1 begins before round r's validation ends it.
    seq_begin, seq_end = positions(sequential, "ROUND_BEGIN"), positions(sequential, "ROUND_END")
    ovl_begin, ovl_end = positions(overlapped, "ROUND_BEGIN"), positions(overlapped, "ROUND_END")
    for r in range(1, ROUNDS):
        assert seq_end[r] < seq_begin[r + 1]
        assert ovl_begin[r + 1] < ovl_end[r]
    assert ovl_end[ROUNDS] < positions(overlapped, "JOB_END")[ROUNDS]


async def test_server_side_evaluation_scores_the_global_model_on_the_test_set(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Execute: the coordinator evaluates on digits' held-out union; agents validate nothing.
    events = await run(
        settings,
        tmp_path,
        eval_interval=2,
        test_data="fedbus.examples.digits:load_test",
        test_data_args=DATA_ARGS,
    )
    # Assert: a TEST_RESULT every second round and the last, none of them from agents ...
    tests = {e["round"]: e["data"] for e in events if e["event"] == "TEST_RESULT"}
    assert sorted(tests) == [2, 4]
    ends = {e["round"]: e["data"] for e in events if e["event"] == "ROUND_END"}
    assert "eval_agents" not in ends[4] and ends[4]["eval_examples"] == len(load_test(**DATA_ARGS))
    assert ends[1]["accuracy"] is None and ends[2]["accuracy"] == tests[2]["accuracy"]
    # ... and the last one is the final model's accuracy on that test set, recomputed here.
    model = make_model()
    load_numpy_state(model, final_weights(tmp_path / "itest"))
    test = load_test(**DATA_ARGS)
    loss, accuracy, _ = evaluate_model(model, *test.tensors)
    assert tests[4]["accuracy"] == accuracy and np.isclose(tests[4]["loss"], loss)
    assert accuracy > 0.5  # it learned: a 10-class guess scores ~0.1
    assert torch.is_tensor(test.tensors[0])


@pytest.mark.parametrize("overcommitment", [1.0, 1.5])
async def test_a_validation_rides_in_the_next_train_task_of_the_agents_it_trains(
    settings: bus.BrokerSettings, tmp_path: Path, overcommitment: float
) -> None:
    # Prepare: a watcher of every task, update and result on the wire; 2 of the 4 agents
    # are kept each round (1.5: 3 dispatched, the 2 fastest kept).
    seen: list[tuple[str, Task]] = []  # (agent, task)
    results: list[ResultMeta] = []  # published apart
    in_updates: list[ResultMeta] = []  # inside an UpdateMeta
    topics = Topics(settings.prefix)
    ready = asyncio.Event()

    async def watch() -> None:
        async with bus.make_client(settings, "task-watcher", persistent=False) as client:
            for i in range(4):
                await client.subscribe(topics.agent_tasks(f"agent-{i}"), qos=1)
            await client.subscribe(topics.all_job_updates(), qos=1)
            await client.subscribe(topics.all_job_results(), qos=1)
            ready.set()
            async for message in client.messages:
                parsed = topics.parse(str(message.topic))
                payload = bytes(message.payload)  # type: ignore[arg-type]
                if parsed.kind is TopicKind.AGENT_TASKS:
                    seen.append((parsed.agent or "", decode_envelope(Task, payload)[0]))
                elif parsed.kind is TopicKind.JOB_RESULT:
                    results.append(decode_envelope(ResultMeta, payload)[0])
                else:
                    update = decode_envelope(UpdateMeta, payload)[0]
                    if update.validation is not None:
                        in_updates.append(update.validation)

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(ready.wait(), 10)
    # Execute
    config = job_config(
        rounds=ROUNDS,
        num_participants=2,
        overcommitment=overcommitment,
        selector={"name": "random", "seed": 1},
    )
    service = CoordinatorService(settings, runs_dir=tmp_path)
    service.submit(config)
    async with running_agents(settings, 4), asyncio.timeout(90):
        assert await service.serve(exit_when_idle=True) == {"itest": True}
    # The last round's results are the last messages the watcher gets: wait for them.
    await wait_until(lambda: len({m.agent for m in results if m.round == ROUNDS}) == 4)
    watcher.cancel()
    # Assert: every round validated on all 4 agents ...
    events = read_events(tmp_path / "itest" / "events.jsonl")
    ends = {e["round"]: e["data"] for e in events if e["event"] == "ROUND_END"}
    assert sorted(ends) == list(range(1, ROUNDS + 1))
    assert all(ends[r]["eval_agents"] == 4 for r in ends)
    # ... rounds 1..R-1 by requests folded into round r+1's train tasks and validate
    # tasks to the agents that round does not train; the last round by 4 validate tasks.
    dispatched = 2 if overcommitment == 1.0 else 3
    for r in range(1, ROUNDS + 1):
        trains = {a: t for a, t in seen if t.kind == "train" and t.round == r + 1}
        alone = {a: t for a, t in seen if t.kind == "validate" and t.round == r}
        replies_in_updates = {m.agent for m in in_updates if m.round == r}
        replies_apart = {m.agent for m in results if m.round == r}
        if r < ROUNDS:
            assert len(trains) == dispatched and len(alone) == 4 - dispatched
            assert all(t.validate_first is not None for t in trains.values())
            assert all(t.validate_first.round == r for t in trains.values())  # type: ignore[union-attr]
            assert set(trains).isdisjoint(alone)
        else:
            assert not trains and len(alone) == 4
        # Waiting for every update (1.0), the trained agents answer inside them; keeping
        # the K fastest (1.5), everyone answers apart, before training.
        folded = overcommitment == 1.0 and r < ROUNDS
        assert all(t.validate_first.in_update is folded for t in trains.values())  # type: ignore[union-attr]
        assert replies_in_updates == (set(trains) if folded else set())
        assert replies_apart == set(alone) | (set() if folded else set(trains))
    assert all(t.validate_first is None for _, t in seen if t.round == 1)
