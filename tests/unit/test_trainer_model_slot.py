"""LocalTrainer's model slots: weights loaded once per global model, never stale."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import edge_agent.trainer as trainer_module
from edge_agent.torch_state import state_to_numpy
from edge_agent.trainer import LocalTrainer
from fedbus.examples.digits import make_model
from fedbus.protocol.messages import TrainConfig
from fedbus.protocol.params import ParamLayout

CONFIG = TrainConfig(
    model="fedbus.examples.digits:make_model",
    data="fedbus.examples.digits:load_partition",
    data_args={"num_partitions": 4, "alpha": 0.5, "seed": 0},
    local_steps=4,
    batch_size=16,
    seed=0,
)


def global_model(seed: int, *, read_only: bool) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    tensors = {k: v.copy() for k, v in state_to_numpy(make_model()).items()}
    for array in tensors.values():
        array.setflags(write=not read_only)
    return tensors


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per weight load the trainer does."""
    calls: list[int] = []
    real = trainer_module.load_numpy_state

    def counted(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "load_numpy_state", counted)
    return calls


def reference(tensors: dict[str, np.ndarray]) -> tuple[tuple[float, float, int], np.ndarray]:
    """Evaluation and training delta of a fresh trainer: nothing cached."""
    layout = ParamLayout.from_tensors(tensors)
    evaluation = LocalTrainer("cpu").evaluate(CONFIG, 1, tensors)
    delta = LocalTrainer("cpu").train(CONFIG, 1, tensors, layout, seed=5).delta
    return evaluation, delta


def test_training_after_the_folded_validation_loads_the_model_once(loads: list[int]) -> None:
    tensors = global_model(1, read_only=True)  # as decoded from the wire
    expected_eval, expected_delta = reference(tensors)
    loads.clear()
    trainer = LocalTrainer("cpu")
    assert trainer.evaluate(CONFIG, 1, tensors) == expected_eval
    delta = trainer.train(CONFIG, 1, tensors, ParamLayout.from_tensors(tensors), seed=5).delta
    assert loads == [1]
    np.testing.assert_array_equal(delta, expected_delta)


def test_trained_weights_are_never_taken_for_the_global_model(loads: list[int]) -> None:
    tensors = global_model(2, read_only=True)
    layout = ParamLayout.from_tensors(tensors)
    expected_eval, expected_delta = reference(tensors)
    trainer = LocalTrainer("cpu")
    first = trainer.train(CONFIG, 1, tensors, layout, seed=5).delta
    loads.clear()
    # Training changed the weights: the same arrays are loaded again (once: the training
    # after this evaluation starts from what it loaded).
    assert trainer.evaluate(CONFIG, 1, tensors) == expected_eval
    again = trainer.train(CONFIG, 1, tensors, layout, seed=5).delta
    assert loads == [1]
    np.testing.assert_array_equal(first, expected_delta)
    np.testing.assert_array_equal(again, expected_delta)


def test_writable_arrays_are_loaded_every_time(loads: list[int]) -> None:
    tensors = global_model(3, read_only=False)
    trainer = LocalTrainer("cpu")
    before = trainer.evaluate(CONFIG, 1, tensors)
    for array in tensors.values():
        array *= 0.0  # changed in place: same objects, other values
    after = trainer.evaluate(CONFIG, 1, tensors)
    assert len(loads) == 2
    assert after != before
    assert after == LocalTrainer("cpu").evaluate(CONFIG, 1, tensors)


def test_a_model_handed_out_is_loaded_again(loads: list[int]) -> None:
    tensors = global_model(4, read_only=True)
    trainer = LocalTrainer("cpu")
    expected = trainer.evaluate(CONFIG, 1, tensors)
    with torch.no_grad():
        for parameter in trainer.model(CONFIG.model).parameters():
            parameter.zero_()  # the caller may change what it was given
    assert trainer.evaluate(CONFIG, 1, tensors) == expected
    assert len(loads) == 2


def test_other_arrays_of_the_same_values_are_loaded(loads: list[int]) -> None:
    one, other = global_model(5, read_only=True), global_model(5, read_only=True)
    trainer = LocalTrainer("cpu")
    trainer.evaluate(CONFIG, 1, one)
    trainer.evaluate(CONFIG, 1, other)
    trainer.evaluate(CONFIG, 1, other)
    assert len(loads) == 2  # identity, not values, says what is held
