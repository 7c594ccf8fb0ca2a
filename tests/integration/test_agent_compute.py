"""Where an agent computes: short work of its own trainer on the event loop, the rest off it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from coordinator.service import CoordinatorService
from edge_agent.trainer import LocalTrainer
from fedbus.protocol import bus

from .conftest import job_config, running_agents


class ThreadRecordingTrainer(LocalTrainer):
    """A real trainer that notes which thread ran each train and evaluate call."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.calls: list[tuple[str, int, int]] = []  # (kind, partition, thread id)

    def train(self, config: Any, partition: int, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("train", partition, threading.get_ident()))
        return super().train(config, partition, *args, **kwargs)

    def evaluate(self, config: Any, partition: int, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("validate", partition, threading.get_ident()))
        return super().evaluate(config, partition, *args, **kwargs)


async def test_short_compute_moves_onto_the_loop_after_its_first_measured_run(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    # Prepare: one agent with its own (fast) trainer, one whose train_fn is set from outside.
    trainer = ThreadRecordingTrainer()
    loop_thread = threading.get_ident()
    custom_threads: list[int] = []
    service = CoordinatorService(settings, runs_dir=tmp_path)
    service.submit(job_config(rounds=4, num_participants=2, min_agents=2, local_steps=5))
    async with running_agents(settings, 2, trainer=trainer) as agents:
        own_train = agents[1].train_fn

        def custom(*args: Any) -> Any:
            custom_threads.append(threading.get_ident())
            return own_train(*args)

        agents[1].train_fn = custom
        # Execute
        async with asyncio.timeout(60):
            assert await service.serve(exit_when_idle=True) == {"itest": True}

    # Assert: agent-0's first train and first validation ran in a worker thread, the later
    # ones (a few ms each) on the loop; agent-1's custom train_fn never ran on the loop.
    def threads(kind: str, partition: int) -> list[int]:
        return [t for k, p, t in trainer.calls if k == kind and p == partition]

    assert len(threads("train", 0)) == 4
    assert threads("train", 0)[0] != loop_thread
    # (round 1 may include torch's warm-up, over the bar: then round 2 is measured again)
    assert threads("train", 0)[2:] == [loop_thread] * 2
    assert len(custom_threads) == 4 and loop_thread not in custom_threads
    assert loop_thread not in threads("train", 1)
    validations = threads("validate", 0)
    assert len(validations) == 4
    assert validations[0] != loop_thread and validations[2:] == [loop_thread] * 2
