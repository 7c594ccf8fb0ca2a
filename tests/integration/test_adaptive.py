"""Adaptive training over a real broker: budgets shrink payloads, the K fastest are kept."""

from __future__ import annotations

import asyncio
from pathlib import Path

from coordinator.events import read_events
from coordinator.job_runner import JobRunner
from coordinator.service import CoordinatorService
from edge_agent.emulation import Emulator
from fedbus.fleet import load_fleet, save_fleet
from fedbus.fleet.builders import build_synthetic
from fedbus.protocol import bus

from .conftest import job_config

K = 5


async def test_adaptive_rounds_shrink_slow_payloads_and_keep_the_k_fastest(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    fleet_path = tmp_path / "fleet.json.gz"
    save_fleet(fleet_path, build_synthetic(20, seed=5, availability="lab"))
    fleet = load_fleet(fleet_path)
    config = job_config(
        name="adapt",
        data_args={"num_partitions": 20, "alpha": None, "seed": 0},
        rounds=3,
        num_participants=K,
        overcommitment=2.0,  # 10 sampled, all trained within the budget, 5 kept
        min_agents=20,
        local_steps=10,
        batch_size=16,
        clock="virtual",
        fleet=str(fleet_path),
        adaptive_training=True,
        t_budget=10.0,
        # A 200k-parameter model on the time model: an 800 kB dense upload does not fit 10 s on
        # a slow link, so those agents must send a top-k fraction.
        time_model_params=200_000,
        selector={"name": "oort", "seed": 1},
        eval_interval=3,
    )
    emulator = Emulator(fleet, settings, name="emu")
    ready = asyncio.Event()
    emu_task = asyncio.create_task(emulator.run(connected=ready))
    straggler_calls: list[tuple[list[str], int]] = []

    def spy(runner: JobRunner) -> None:
        real = runner.selector.register_stragglers

        def record(ids, durations, time_stamp):  # type: ignore[no-untyped-def]
            straggler_calls.append((sorted(ids), time_stamp))
            return real(ids, durations, time_stamp)

        runner.selector.register_stragglers = record  # type: ignore[method-assign]

    try:
        async with asyncio.timeout(60):
            await ready.wait()
        service = CoordinatorService(settings, runs_dir=tmp_path, on_runner=spy)
        service.submit(config)
        async with asyncio.timeout(120):
            assert await service.serve(exit_when_idle=True) == {"adapt": True}
    finally:
        emu_task.cancel()
        await asyncio.gather(emu_task, return_exceptions=True)

    events = read_events(tmp_path / "adapt" / "events.jsonl")
    ends = {e["round"]: e["data"] for e in events if e["event"] == "ROUND_END"}
    begins = {e["round"]: e for e in events if e["event"] == "ROUND_BEGIN"}
    assert sorted(ends) == [1, 2, 3]
    sparse_bytes, dense_bytes = [], []
    for r, end in ends.items():
        durations = end["durations"]
        sizes = end["update_bytes"]
        keep = end["keep_frac_all"]
        replied = set(sizes) - set(end["failed"])
        # Every sampled agent was dispatched with the budget (adaptive: no pre-filtering).
        assert sorted(begins[r]["data"]["dispatched"]) == sorted(begins[r]["data"]["selected"])
        # Exactly the K fastest successful replies are kept.
        fastest = sorted(replied, key=lambda a: (durations[a], a))[:K]
        assert sorted(end["kept"]) == sorted(fastest)
        assert end["virtual_duration"] == max(durations[a] for a in fastest)
        assert set(end["stragglers"]) == set(begins[r]["data"]["selected"]) - set(fastest)
        for agent in replied:
            (sparse_bytes if keep[agent] < 1.0 else dense_bytes).append(sizes[agent])
            if keep[agent] < 1.0:
                # A shrunken payload belongs to a slow link: peak throughput below the
                # median of the agents that sent everything.
                assert keep[agent] >= 0.3
    # Slow links really sent fewer bytes on the wire.
    assert sparse_bytes and dense_bytes
    assert max(sparse_bytes) < min(dense_bytes)
    # Stragglers reached the selector every round.
    assert [t for _, t in straggler_calls] == [1, 2, 3]
    assert all(len(ids) == 5 for ids, _ in straggler_calls)
