"""Update admission: every rejection reason, and that a rejected update writes nothing used."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.update_check import Assignment, Rejected, check_header, decode_update, write_update
from fedbus.protocol.codec import SparseTensor
from fedbus.protocol.messages import UpdateMeta, encode_envelope
from fedbus.protocol.params import ParamLayout

LAYOUT = ParamLayout.from_tensors({"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)})
ASSIGNED = Assignment("a1", "task-1", 4, 3)


def meta(**kw: object) -> UpdateMeta:
    base = {
        "job": "j",
        "round": 4,
        "agent": "a1",
        "task_id": "task-1",
        "base_version": 3,
        "num_examples": 10,
    }
    return UpdateMeta.model_validate({**base, **kw})


def header(
    m: UpdateMeta,
    topic_agent: str = "a1",
    already: bool = False,
    assignment: Assignment | None = ASSIGNED,
) -> None:
    check_header(
        job="j",
        topic_agent=topic_agent,
        meta_job=m.job,
        meta_agent=m.agent,
        task_id=m.task_id,
        round_=m.round,
        version=m.base_version,
        assignment=assignment,
        already_received=already,
    )


def reason(fn) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(Rejected) as info:
        fn()
    return info.value.reason


def test_header_accepts_the_assigned_update() -> None:
    header(meta())


def test_header_rejections() -> None:
    assert reason(lambda: header(meta(agent="a2"))) == "forged"
    assert reason(lambda: header(meta(job="other"))) == "wrong_job"
    assert reason(lambda: header(meta(task_id="old"))) == "stale"
    assert reason(lambda: header(meta(), assignment=None)) == "stale"
    assert reason(lambda: header(meta(round=3))) == "stale"
    assert reason(lambda: header(meta(base_version=2))) == "stale"
    assert reason(lambda: header(meta(), already=True)) == "duplicate"


def test_dense_update_is_written_into_the_row() -> None:
    row = np.full(LAYOUT.num_params, 7.0, np.float32)
    tensors = {"w": np.ones((2, 3), np.float16), "b": np.array([2.0, 3.0], np.float32)}
    write_update(meta(), tensors, LAYOUT, row)  # type: ignore[arg-type]
    np.testing.assert_array_equal(row, [1, 1, 1, 1, 1, 1, 2, 3])


def test_sparse_update_zeroes_missing_coordinates() -> None:
    row = np.full(LAYOUT.num_params, 7.0, np.float32)
    sparse = SparseTensor(8, np.array([1, 6], np.int32), np.array([0.5, -1], np.float32))
    write_update(meta(encoding="sparse"), {"delta": sparse}, LAYOUT, row)
    np.testing.assert_array_equal(row, [0, 0.5, 0, 0, 0, 0, -1, 0])


@pytest.mark.parametrize(
    ("m", "tensors", "why"),
    [
        (meta(), {"w": np.ones((2, 3), np.float32)}, "bad_tensors"),  # missing b
        (meta(), {"w": np.ones((3, 2), np.float32), "b": np.ones(2, np.float32)}, "bad_tensors"),
        (meta(), {"w": np.ones((2, 3), np.float64), "b": np.ones(2, np.float64)}, "bad_tensors"),
        (
            meta(),
            {"w": np.ones((2, 3), np.float32), "b": np.array([np.nan, 1], np.float32)},
            "non_finite",
        ),
        (
            meta(),
            {"w": np.full((2, 3), np.inf, np.float32), "b": np.ones(2, np.float32)},
            "non_finite",
        ),
        (
            meta(encoding="sparse"),
            {"delta": SparseTensor(9, np.array([1], np.int32), np.ones(1, np.float32))},
            "bad_tensors",
        ),
        (
            meta(encoding="sparse"),
            {"delta": SparseTensor(8, np.array([8], np.int32), np.ones(1, np.float32))},
            "bad_tensors",
        ),
        (
            meta(encoding="sparse"),
            {"delta": SparseTensor(8, np.array([3, 3], np.int32), np.ones(2, np.float32))},
            "bad_tensors",
        ),
        (meta(encoding="none"), {}, "bad_tensors"),
    ],
)
def test_tensor_rejections(m: UpdateMeta, tensors: dict, why: str) -> None:  # type: ignore[type-arg]
    row = np.zeros(LAYOUT.num_params, np.float32)
    assert reason(lambda: write_update(m, tensors, LAYOUT, row)) == why


def test_decode_rejects_oversized_and_malformed() -> None:
    payload = bytes(
        encode_envelope(meta(), {"w": np.ones((2, 3), np.float32), "b": np.ones(2, np.float32)})
    )
    assert decode_update(payload, 1 << 20)[0] == meta()
    assert reason(lambda: decode_update(payload, 64)) == "oversized"
    assert reason(lambda: decode_update(b"\x00garbage", 1 << 20)) == "malformed"
    from fedbus.protocol.codec import encode

    assert reason(lambda: decode_update(bytes(encode({"job": "j"})), 1 << 20)) == "schema"
