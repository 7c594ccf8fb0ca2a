"""Emulated fleets on the virtual clock, over a real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from coordinator.config import JobConfig
from coordinator.events import read_events
from coordinator.service import CoordinatorService
from edge_agent.emulation import Emulator
from edge_agent.profile import DataSpec
from fedbus.examples.digits import load_partition
from fedbus.fleet import load_fleet, save_fleet
from fedbus.fleet.builders import build_synthetic
from fedbus.fleet.time_model import round_time
from fedbus.protocol import bus

from .conftest import job_config

K = 10
SEED = 11
STEPS, BATCH = 5, 16


async def run_with(
    emulator: Emulator, settings: bus.BrokerSettings, config: JobConfig, runs: Path
) -> CoordinatorService:
    """Connect the emulated fleet, run the job to its end, disconnect the fleet."""
    ready = asyncio.Event()
    emu_task = asyncio.create_task(emulator.run(connected=ready))
    try:
        async with asyncio.timeout(60):
            await ready.wait()
        service = CoordinatorService(settings, runs_dir=runs)
        service.submit(config)
        async with asyncio.timeout(120):
            assert await service.serve(exit_when_idle=True) == {config.name: True}
        return service
    finally:
        emu_task.cancel()
        await asyncio.gather(emu_task, return_exceptions=True)


async def test_virtual_rounds_keep_exactly_the_k_fastest_active(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    fleet_path = tmp_path / "fleet.json.gz"
    save_fleet(fleet_path, build_synthetic(50, seed=3, availability="mobile"))
    fleet = load_fleet(fleet_path)
    config = job_config(
        name="virt",
        data_args={"num_partitions": 50, "alpha": 0.5, "seed": 0},
        rounds=5,
        num_participants=K,
        overcommitment=1.3,
        clients_required=1,
        min_agents=50,
        local_steps=STEPS,
        batch_size=BATCH,
        clock="virtual",
        fleet=str(fleet_path),
        seed=SEED,
        eval_interval=5,
    )
    # Told the job's data, every emulated agent reports its partition size at start-up.
    emulator = Emulator(fleet, settings, name="emu", data=DataSpec(config.data, config.data_args))
    service = await run_with(emulator, settings, config, tmp_path)

    # The sizes reached the coordinator's registry (the selectors' initial prior).
    expected = {
        p.client_id: len(load_partition(p.partition, **config.data_args)[0])  # type: ignore[arg-type]
        for p in fleet
    }
    registered = {a: service.registry.profile(a) for a in expected}
    assert {a: p.num_samples if p else None for a, p in registered.items()} == expected
    assert len(set(expected.values())) > 1

    events = read_events(tmp_path / "virt" / "events.jsonl")
    begins = {e["round"]: e for e in events if e["event"] == "ROUND_BEGIN"}
    ends = {e["round"]: e for e in events if e["event"] == "ROUND_END"}
    assert sorted(ends) == [1, 2, 3, 4, 5]
    num_params = next(e for e in events if e["event"] == "JOB_BEGIN")["data"]["num_params"]
    model_bytes = num_params * 4
    flops = 3.0 * num_params * BATCH * STEPS
    clock = 0.0
    for r in range(1, 6):
        begin, end = begins[r], ends[r]
        assert begin["virtual_time"] == clock
        expected: list[tuple[float, str]] = []
        for agent in begin["data"]["selected"]:
            profile = fleet.by_id(agent)
            rng = np.random.default_rng([SEED, r, profile.partition])
            total = round_time(profile, clock, model_bytes, model_bytes, flops, rng).total
            if profile.is_active(clock) and profile.is_active(clock + total):
                expected.append((total, agent))
        expected.sort()
        fastest = [a for _, a in expected[:K]]
        assert begin["data"]["dispatched"] == fastest
        assert sorted(end["data"]["kept"]) == sorted(fastest)
        # The round lasts as long as the K-th fastest; the virtual clock advances by it.
        assert end["data"]["virtual_duration"] == expected[:K][-1][0]
        clock += end["data"]["virtual_duration"]
        assert end["virtual_time"] == clock
        # Everyone sampled but not kept was reported as a straggler.
        assert set(end["data"]["stragglers"]) == set(begin["data"]["selected"]) - set(fastest)
    assert len(begins[1]["data"]["selected"]) == 13  # floor(10 * 1.3)


async def test_a_fleet_that_is_asleep_makes_the_virtual_clock_wait_not_the_job_crash(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: 6 connected agents whose traces say they are all offline for the first
    # hour of the cycle (a night), available after.
    import dataclasses

    from fedbus.fleet import Fleet
    from fedbus.fleet.trace import ActivityWindows

    base = build_synthetic(6, seed=3, availability="lab")
    night = ActivityWindows(np.array([3600.0]), np.array([base.profiles[0].active.cycle]))
    fleet = Fleet(tuple(dataclasses.replace(p, active=night) for p in base.profiles))
    fleet_path = tmp_path / "fleet.json.gz"
    save_fleet(fleet_path, fleet)
    config = job_config(
        name="night",
        data_args={"num_partitions": 6, "alpha": 0.5, "seed": 0},
        rounds=2,
        num_participants=3,
        clients_required=2,
        min_agents=6,
        local_steps=STEPS,
        batch_size=BATCH,
        clock="virtual",
        fleet=str(fleet_path),
        eval_interval=0,
    )
    # Execute
    await run_with(
        Emulator(load_fleet(fleet_path), settings, name="emu-night"), settings, config, tmp_path
    )
    # Assert: the first round began when the fleet woke up, and both rounds trained.
    events = read_events(tmp_path / "night" / "events.jsonl")
    begins = [e for e in events if e["event"] == "ROUND_BEGIN"]
    assert begins[0]["virtual_time"] == 3600.0
    ends = [e for e in events if e["event"] == "ROUND_END"]
    assert [e["round"] for e in ends] == [1, 2] and all(len(e["data"]["kept"]) == 3 for e in ends)
