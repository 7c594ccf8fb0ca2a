from __future__ import annotations

import numpy as np
import pytest

from fedbus.protocol.errors import InvalidMessage
from fedbus.protocol.messages import (
    AgentStatus,
    UpdateMeta,
    decode_envelope,
    decode_json,
    encode_envelope,
    encode_json,
)


def _update(**kw: object) -> UpdateMeta:
    base = {
        "job": "j",
        "round": 1,
        "agent": "a",
        "task_id": "t",
        "base_version": 0,
        "num_examples": 5,
    }
    return UpdateMeta.model_validate({**base, **kw})


def test_update_round_trip_with_tensors() -> None:
    meta = _update(utility=1.5)
    out, tensors = decode_envelope(UpdateMeta, encode_envelope(meta, {"w": np.ones(3, np.float32)}))
    assert out == meta
    np.testing.assert_array_equal(tensors["w"], np.ones(3))


def test_status_json_round_trip() -> None:
    status = AgentStatus(agent="a", state="online")
    assert decode_json(AgentStatus, encode_json(status)) == status


def test_unknown_fields_and_versions_are_schema_errors() -> None:
    with pytest.raises(InvalidMessage) as info:
        decode_json(AgentStatus, b'{"agent": "a", "state": "online", "extra": 1}')
    assert info.value.reason == "schema"
    with pytest.raises(InvalidMessage, match="schema_version"):
        decode_json(AgentStatus, b'{"schema_version": 9, "agent": "a", "state": "online"}')
    with pytest.raises(InvalidMessage) as info:
        decode_json(AgentStatus, b"not json")
    assert info.value.reason == "malformed"


def test_non_finite_scalars_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        _update(utility=float("nan"))
