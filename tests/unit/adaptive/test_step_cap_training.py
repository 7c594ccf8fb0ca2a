"""The learner cap where steps are run: the fixed-steps trainer and the virtual clock's charge."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.agent import AgentIdentity
from edge_agent.emulation import VirtualTraining
from edge_agent.model_store import GlobalModel
from edge_agent.torch_state import state_to_numpy
from edge_agent.trainer import LocalTrainer
from fedbus.fleet.builders import build_synthetic
from fedbus.fleet.virtual_round import RoundWork, simulate_round
from fedbus.protocol.messages import AgentProfile, Task, TrainConfig
from fedbus.protocol.params import ParamLayout

MODEL = "fedbus.examples.digits:make_model"
DATA = "fedbus.examples.digits:load_partition"
# IID over 100 partitions: ~14 training samples each, one batch of 32 -> cap max(5, E).
DATA_ARGS = {"num_partitions": 100, "alpha": None, "seed": 0}
BATCH = 32


def _config(local_steps: int, base: int | None, clock: str = "wall") -> TrainConfig:
    return TrainConfig(
        model=MODEL,
        data=DATA,
        data_args=DATA_ARGS,
        local_steps=local_steps,
        base_local_steps=base,
        batch_size=BATCH,
        seed=4,
        clock=clock,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def trainer() -> LocalTrainer:
    return LocalTrainer("cpu")


def _global(trainer: LocalTrainer) -> GlobalModel:
    tensors = state_to_numpy(trainer.model(MODEL))
    return GlobalModel("j", 0, tensors, ParamLayout.from_tensors(tensors))


def test_trainer_caps_a_raised_step_count_but_not_the_jobs_own(trainer: LocalTrainer) -> None:
    model = _global(trainer)
    assert trainer.partition(_config(1, None), 0).num_train <= BATCH  # one batch
    raised = trainer.train(_config(22, 2), 0, model.tensors, model.layout, seed=1)
    assert raised.steps == 5  # max(5 * 1 batch, E = 2), not the 22 asked for
    own = trainer.train(_config(22, None), 0, model.tensors, model.layout, seed=1)
    assert own.steps == 22  # the job's own steps are never cut
    assert raised.success and own.success


def test_virtual_training_charges_the_steps_that_ran(trainer: LocalTrainer) -> None:
    fleet = build_synthetic(3, seed=5)
    device = fleet[1]
    model = _global(trainer)
    config = _config(22, 2, clock="virtual")
    task = Task(
        job="j",
        round=3,
        task_id="t",
        kind="train",
        model_version=0,
        config=config,
        virtual_start=100.0,
    )
    identity = AgentIdentity(device.client_id, device.partition, AgentProfile())
    plan = VirtualTraining(trainer, fleet)(task, model, identity)
    assert plan.outcome.steps == 5

    def t_comp(steps: int) -> float:
        work = RoundWork.dense(model.layout.num_params, BATCH, steps)
        return simulate_round(device, 100.0, work, seed=config.seed, round_=3).t_comp

    assert plan.timings.t_comp == pytest.approx(t_comp(5))
    assert not np.isclose(plan.timings.t_comp, t_comp(22))
