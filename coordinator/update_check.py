"""Admission of updates and results: every check a payload must pass, pure and in order.

Whatever the broker let through, an update is rejected (with a reason that the job
status counts) when it is malformed or oversized, fails its schema, names another agent
than its topic, is for a round, task or model version it was not assigned, is a
duplicate, has the wrong tensor names, shapes or dtypes, or holds NaN or Inf. A rejected
update changes nothing: it is written into an aggregation row only after every header
check, and a row that fails the finiteness check is simply never used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedbus.protocol.codec import SparseTensor, Tensor
from fedbus.protocol.errors import InvalidMessage
from fedbus.protocol.messages import ResultMeta, UpdateMeta, decode_envelope
from fedbus.protocol.params import ParamLayout

UPDATE_DTYPES = frozenset({np.dtype("<f4"), np.dtype("<f2")})


class Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Assignment:
    agent: str
    task_id: str
    round: int
    model_version: int


def decode_update(
    payload: bytes | bytearray | memoryview, max_bytes: int
) -> tuple[UpdateMeta, dict[str, Tensor]]:
    try:
        return decode_envelope(UpdateMeta, payload, max_bytes=max_bytes)
    except InvalidMessage as exc:
        raise Rejected(exc.reason, exc.detail) from exc


def decode_result(payload: bytes | bytearray | memoryview, max_bytes: int) -> ResultMeta:
    try:
        meta, _ = decode_envelope(ResultMeta, payload, max_bytes=max_bytes)
    except InvalidMessage as exc:
        raise Rejected(exc.reason, exc.detail) from exc
    return meta


def check_header(
    *,
    job: str,
    topic_agent: str,
    meta_job: str,
    meta_agent: str,
    task_id: str,
    round_: int,
    version: int,
    assignment: Assignment | None,
    already_received: bool,
) -> None:
    """Identity, freshness and uniqueness of an update or result."""
    if meta_agent != topic_agent:
        raise Rejected("forged", f"payload names agent {meta_agent!r} on {topic_agent!r}'s topic")
    if meta_job != job:
        raise Rejected("wrong_job", f"payload is for job {meta_job!r}")
    if assignment is None or assignment.task_id != task_id:
        raise Rejected("stale", f"task {task_id!r} (round {round_}) is not a current assignment")
    if round_ != assignment.round or version != assignment.model_version:
        raise Rejected(
            "stale",
            f"round {round_} / model v{version}, assigned round {assignment.round} / "
            f"v{assignment.model_version}",
        )
    if already_received:
        raise Rejected("duplicate", f"task {task_id!r} already answered")


def write_update(
    meta: UpdateMeta, tensors: dict[str, Tensor], layout: ParamLayout, row: np.ndarray
) -> None:
    """Check the update's tensors against the model layout and write its delta into ``row``."""
    if meta.encoding == "dense":
        dense = {k: v for k, v in tensors.items() if isinstance(v, np.ndarray)}
        if len(dense) != len(tensors):
            raise Rejected("bad_tensors", "a dense update may not carry sparse tensors")
        problem = layout.matches(dense)
        if problem:
            raise Rejected("bad_tensors", problem)
        for slot in layout.slots:
            array = dense[slot.name]
            if array.dtype not in UPDATE_DTYPES:
                raise Rejected("bad_tensors", f"tensor {slot.name!r} has dtype {array.dtype}")
            row[slot.offset : slot.offset + slot.size] = array.reshape(-1)
    elif meta.encoding == "sparse":
        sparse = tensors.get("delta")
        if len(tensors) != 1 or not isinstance(sparse, SparseTensor):
            raise Rejected(
                "bad_tensors", "a sparse update carries exactly one sparse tensor 'delta'"
            )
        if sparse.size != layout.num_params:
            raise Rejected(
                "bad_tensors", f"sparse size {sparse.size} != {layout.num_params} parameters"
            )
        if sparse.values.dtype not in UPDATE_DTYPES:
            raise Rejected("bad_tensors", f"sparse values have dtype {sparse.values.dtype}")
        idx = sparse.indices
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= layout.num_params):
            raise Rejected("bad_tensors", "sparse index out of range")
        if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
            raise Rejected("bad_tensors", "sparse indices must be strictly increasing")
        row.fill(0.0)
        row[idx] = sparse.values
    else:
        raise Rejected("bad_tensors", "a successful update must carry a delta")
    # One pass at memory speed: a NaN or Inf anywhere (or an overflow to Inf) poisons the sum.
    with np.errstate(over="ignore", invalid="ignore"):  # hostile input: no warning spam
        total = row.sum(dtype=np.float32)
    if not np.isfinite(total):
        raise Rejected("non_finite", "update contains NaN or Inf (or overflows float32)")
