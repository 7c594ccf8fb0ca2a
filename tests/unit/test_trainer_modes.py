"""set_training: the same modes as Module.train, and a module's own train() still runs."""

from __future__ import annotations

import torch
from torch import nn

from edge_agent.trainer import set_training


class Frozen(nn.Module):
    """Keeps its BatchNorm in eval mode whatever it is told, as fine-tuning code does."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(3)
        self.calls: list[bool] = []

    def train(self, mode: bool = True) -> Frozen:
        self.calls.append(mode)
        super().train(mode)
        self.norm.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_every_module_switches_as_with_module_train() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Sequential(nn.ReLU()))
    reference = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Sequential(nn.ReLU()))
    for mode in (False, True, True, False):
        set_training(model, mode)
        reference.train(mode)
        assert modes(model) == modes(reference) == [mode] * 5
    # Eval mode is real: dropout is off.
    torch.manual_seed(0)
    x = torch.ones(8, 3)
    assert torch.equal(model(x), model(x))


def test_a_module_that_overrides_train_gets_its_train_called() -> None:
    model = nn.Sequential(nn.Linear(3, 3), Frozen())
    frozen = model[1]
    set_training(model, True)
    assert frozen.calls == []  # modules start in train mode: nothing to switch
    set_training(model, False)
    set_training(model, True)
    assert frozen.calls == [False, True]
    assert model.training and frozen.training and not frozen.norm.training
