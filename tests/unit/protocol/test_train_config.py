"""TrainConfig.base_local_steps: the job's own steps E travel with a raised local_steps."""

from __future__ import annotations

import pytest

from fedbus.protocol.codec import encode
from fedbus.protocol.errors import InvalidMessage
from fedbus.protocol.messages import Task, TrainConfig, decode_envelope, encode_envelope


def _task(**config: object) -> Task:
    return Task(
        job="j",
        round=1,
        task_id="t",
        kind="train",
        model_version=0,
        config=TrainConfig.model_validate({"model": "m:f", "data": "d:f", **config}),
    )


def test_base_local_steps_defaults_to_none() -> None:
    assert _task().config.base_local_steps is None


def test_base_local_steps_round_trips_in_a_task() -> None:
    task = _task(local_steps=55, base_local_steps=5)
    out, _ = decode_envelope(Task, encode_envelope(task))
    assert out == task
    assert out.config.base_local_steps == 5 and out.config.local_steps == 55


@pytest.mark.parametrize("bad", [0, -1, "many"])
def test_base_local_steps_below_one_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="base_local_steps"):
        _task(base_local_steps=bad)


def test_a_bad_base_local_steps_on_the_wire_is_a_schema_error() -> None:
    meta = _task().model_dump(mode="json")
    meta["config"]["base_local_steps"] = 0
    with pytest.raises(InvalidMessage) as info:
        decode_envelope(Task, encode(meta))
    assert info.value.reason == "schema"
    assert "base_local_steps" in str(info.value)


def test_train_config_stays_frozen() -> None:
    config = _task(base_local_steps=5).config
    with pytest.raises(ValueError, match="frozen"):
        config.base_local_steps = 6  # type: ignore[misc]
