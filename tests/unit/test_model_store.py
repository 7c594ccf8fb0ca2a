"""The agent's model store: runs told apart by epoch, the replaced version kept for validations."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.model_store import ModelStore
from fedbus.protocol.messages import ModelMeta, encode_envelope


def payload(version: int, run_epoch: str) -> bytearray:
    meta = ModelMeta(job="j", version=version, round=version, names=["w"], run_epoch=run_epoch)
    return encode_envelope(meta, {"w": np.full(3, version, np.float32)})


async def test_a_task_of_another_run_waits_for_that_runs_model() -> None:
    store = ModelStore()
    await store.offer(payload(5, "old"))
    assert not store.has("j", 0, "new")  # the old run's newer version is not this run's
    with pytest.raises(TimeoutError):
        await store.wait_for("j", 0, 0.01, "new")
    await store.offer(payload(0, "new"))  # a re-run restarts at 0: it replaces v5
    model = await store.wait_for("j", 0, 0.01, "new")
    assert model is not None and model.version == 0 and model.run_epoch == "new"
    assert store.held_previous("j", 5) is None  # another run's model is not kept


async def test_the_replaced_version_serves_validations_only() -> None:
    store = ModelStore()
    await store.offer(payload(1, "r"))
    await store.offer(payload(2, "r"))
    assert await store.wait_for("j", 1, 0.01, "r") is None  # training: moved on
    previous = await store.wait_for("j", 1, 0.01, "r", previous=True)
    assert previous is not None and float(previous.tensors["w"][0]) == 1.0
    await store.offer(payload(3, "r"))
    assert await store.wait_for("j", 1, 0.01, "r", previous=True) is None  # two behind
