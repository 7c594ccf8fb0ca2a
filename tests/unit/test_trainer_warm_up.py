"""LocalTrainer.warm_up: torch's first-use costs paid at start-up, nothing else changed."""

from __future__ import annotations

import numpy as np
import torch

from edge_agent.torch_state import state_to_numpy
from edge_agent.trainer import LocalTrainer
from fedbus.examples.digits import make_model
from fedbus.protocol.messages import TrainConfig
from fedbus.protocol.params import ParamLayout

CONFIG = TrainConfig(
    model="fedbus.examples.digits:make_model",
    data="fedbus.examples.digits:load_partition",
    data_args={"num_partitions": 4, "alpha": 0.5, "seed": 0},
    local_steps=5,
    batch_size=16,
    learning_rate=0.05,
    momentum=0.9,
    seed=0,
)


def first_round(warm: bool) -> np.ndarray:
    torch.manual_seed(3)
    trainer = LocalTrainer("cpu")
    if warm:
        trainer.warm_up()
    start = state_to_numpy(make_model())  # drawn from the global RNG, after the warm-up
    outcome = trainer.train(CONFIG, 1, start, ParamLayout.from_tensors(start), seed=7)
    assert outcome.success
    return outcome.delta


def test_warm_up_leaves_the_global_rng_and_the_trainer_as_they_were() -> None:
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    trainer = LocalTrainer("cpu")
    trainer.warm_up()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert trainer._models == {} and trainer._partitions == {}


def test_the_first_round_trains_the_same_with_or_without_it() -> None:
    assert first_round(warm=True).tobytes() == first_round(warm=False).tobytes()
