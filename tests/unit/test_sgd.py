"""MomentumSGD against torch.optim.SGD: the same weights, bit for bit, step after step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_agent.sgd import MomentumSGD


def model_and_data(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(64, 12)
    y = torch.randint(0, 4, (64,))
    return model, x, y


def reference(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, **knobs: float
) -> list[torch.Tensor]:
    """torch.optim.SGD, with FedProx's proximal gradient added to .grad before the step."""
    mu = knobs.pop("proximal_mu", 0.0)
    anchor = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), **knobs)
    for step in range(steps):
        batch = slice(8 * step % 64, 8 * step % 64 + 8)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        with torch.no_grad():
            for p, a in zip(model.parameters(), anchor, strict=True):
                if mu > 0:
                    assert p.grad is not None
                    p.grad.add_(p - a, alpha=mu)
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def ours(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, **knobs: float
) -> list[torch.Tensor]:
    optimizer = MomentumSGD(list(model.parameters()), **knobs)
    for step in range(steps):
        batch = slice(8 * step % 64, 8 * step % 64 + 8)
        optimizer.step_on(nn.functional.cross_entropy(model(x[batch]), y[batch]))
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "knobs",
    [
        {"lr": 0.05},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.1, "momentum": 0.5, "weight_decay": 1e-3},
        {"lr": 0.05, "momentum": 0.9, "proximal_mu": 0.7},
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2, "proximal_mu": 1.0},
    ],
)
def test_weights_are_bit_identical_to_torch_optim_sgd(knobs: dict[str, float]) -> None:
    model_a, x, y = model_and_data(3)
    model_b, _, _ = model_and_data(3)
    expected = reference(model_a, x, y, 12, **dict(knobs))
    got = ours(model_b, x, y, 12, **dict(knobs))
    assert any(
        not torch.equal(g, p) for g, p in zip(got, model_and_data(3)[0].parameters(), strict=True)
    )
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e)


def test_frozen_and_unused_parameters_are_left_alone() -> None:
    torch.manual_seed(0)
    used, frozen, unused = nn.Linear(3, 2), nn.Linear(3, 2), nn.Linear(3, 2)
    for p in frozen.parameters():
        p.requires_grad_(False)
    before = [p.detach().clone() for p in (*frozen.parameters(), *unused.parameters())]
    optimizer = MomentumSGD(
        [*used.parameters(), *frozen.parameters(), *unused.parameters()], lr=0.1, momentum=0.9
    )
    x = torch.randn(5, 3)
    start = used.weight.detach().clone()
    for _ in range(3):
        optimizer.step_on((used(x) + frozen(x)).pow(2).mean())
    assert not torch.equal(used.weight, start)
    after = [p.detach() for p in (*frozen.parameters(), *unused.parameters())]
    for b, a in zip(before, after, strict=True):
        assert torch.equal(b, a)
