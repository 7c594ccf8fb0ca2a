"""FedProx's proximal term in local training: mu/2 * ||w - w_global||^2 on top of the loss."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge_agent.torch_state import load_numpy_state, state_to_numpy
from edge_agent.trainer import LocalTrainer
from fedbus.protocol.messages import TrainConfig
from fedbus.protocol.params import ParamLayout

MODEL = "fedbus.examples.digits:make_model"
DATA = "fedbus.examples.digits:load_partition"
DATA_ARGS = {"num_partitions": 4, "alpha": 0.5, "seed": 0}


def config(mu: float, steps: int) -> TrainConfig:
    return TrainConfig(
        model=MODEL,
        data=DATA,
        data_args=DATA_ARGS,
        local_steps=steps,
        batch_size=16,
        learning_rate=0.05,
        momentum=0.0,  # plain SGD: one step is w - lr * grad, checkable by hand
        proximal_mu=mu,
        seed=2,
    )


def train(trainer: LocalTrainer, mu: float, steps: int, start: dict[str, np.ndarray]) -> np.ndarray:
    layout = ParamLayout.from_tensors(start)
    outcome = trainer.train(config(mu, steps), 1, start, layout, seed=11)
    assert outcome.success
    return outcome.delta


def test_one_step_matches_autograd_of_the_proximal_loss() -> None:
    # At the global weights the proximal gradient is zero: take two steps and check the
    # second against autograd of the proximal loss from the first step's weights.
    torch.manual_seed(0)
    trainer = LocalTrainer("cpu")
    start = {k: v.copy() for k, v in state_to_numpy(trainer.model(MODEL)).items()}
    mu = 0.5
    one = train(trainer, mu, 1, start)
    two = train(trainer, mu, 2, start)
    # Reference: the same second batch, gradient of CE + mu/2 ||w - w0||^2 by autograd.
    layout = ParamLayout.from_tensors(start)
    model: nn.Module = trainer.model(MODEL)
    after_one = layout.unflatten(layout.flatten(start) + one)
    load_numpy_state(model, after_one)
    data = trainer.partition(config(mu, 2), 1)
    generator = torch.Generator().manual_seed(11)
    order = torch.randperm(data.num_train, generator=generator)
    assert data.num_train >= 32  # two batches from one shuffle
    batch = order[16:32]
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(data.train_x[batch]), data.train_y[batch])
    anchor = [torch.from_numpy(start[name]) for name, _ in model.named_parameters()]
    prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
    (loss + mu / 2 * prox).backward()
    expected = layout.flatten(after_one) - 0.05 * np.concatenate(
        [p.grad.detach().numpy().reshape(-1) for p in model.parameters()]
    )
    got = layout.flatten(start) + two
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_proximal_term_keeps_many_local_steps_near_the_global_model() -> None:
    torch.manual_seed(0)
    trainer = LocalTrainer("cpu")
    start = {k: v.copy() for k, v in state_to_numpy(trainer.model(MODEL)).items()}
    free = train(trainer, 0.0, 60, start)
    held = train(trainer, 1.0, 60, start)
    assert np.linalg.norm(held) < 0.8 * np.linalg.norm(free)
    # mu = 0 is plain SGD, bit for bit: no anchor, no extra gradient.
    assert np.array_equal(train(trainer, 0.0, 60, start), free)
