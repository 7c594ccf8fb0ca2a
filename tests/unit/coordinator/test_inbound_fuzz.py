"""Fuzzing every inbound topic's handler: nothing a client sends may end the coordinator.

The service's receive loop hands each message to ``CoordinatorService._route``; whatever
the payload, it must return, and a refused message must be counted under a known reason
(an ``error:*`` reason would mean an unexpected exception: a bug a client can trigger).
Updates and results are decoded by the job runner (``decode_update`` / ``decode_result``,
fuzzed here and in test_update_fuzz.py), chunks by ``Reassembler`` on both sides, events by
``decode_json(Event)`` in every watcher. 1,000 examples each, derandomized: the same
inputs every run, fast enough for CI.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiomqtt import Message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from coordinator.service import CoordinatorService
from coordinator.update_check import Rejected, decode_result, decode_update
from fedbus.protocol import bus
from fedbus.protocol.chunking import Reassembler, split
from fedbus.protocol.errors import InvalidMessage
from fedbus.protocol.messages import Event, decode_json
from fedbus.protocol.topics import Topics

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TOPICS = Topics("fedbus")
KNOWN = {"malformed", "schema", "oversized", "forged", "invalid_topic", "bad_job", "flooded"}

# -- payload strategies ------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**30, max_value=10**60)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
# Literal texts json.dumps cannot make: deep nesting, huge integers, NaN, bad UTF-8.
hostile_texts = st.sampled_from(
    [
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b'{"agent": "a1", "state": "online", "ts": ' + b"9" * 5000 + b"}",
        b'{"agent": "a1", "state": "online", "ts": 1e400}',
        b'{"agent": "a1", "state": "online", "ts": NaN}',
        b'{"agent": "a1", "state": "online", "ts": -Infinity}',
        b"\xff\xfe\x00",
        b'"' + b"\\" * 10_001,
        b"",
    ]
)


def status_like(agent: str) -> st.SearchStrategy[Any]:
    """AgentStatus-shaped maps whose fields hold anything."""
    fields = {
        "agent": st.just(agent) | json_values,
        "state": st.sampled_from(["online", "offline"]) | json_values,
        "ts": st.floats() | st.integers() | json_values,
        "profile": st.none()
        | st.fixed_dictionaries(
            {},
            optional={"num_samples": json_values, "static": json_values, "cpu_count": json_values},
        )
        | json_values,
        "schema_version": st.just(1) | json_values,
    }
    return st.fixed_dictionaries({}, optional=fields)


def as_bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def payloads(structured: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        structured.map(as_bytes),
        json_values.map(as_bytes),
        hostile_texts,
        st.binary(max_size=200),
    )


@pytest.fixture
def service(tmp_path: Path) -> CoordinatorService:
    return CoordinatorService(bus.BrokerSettings(), runs_dir=tmp_path)


def route(service: CoordinatorService, topic: str, payload: bytes) -> None:
    """One message through the service; it must return and count any refusal as known."""
    before = sum(service.rejections.counts.values())
    service._route(Message(topic, payload, 1, False, 1, None))
    after = sum(service.rejections.counts.values())
    assert after - before in (0, 1)
    unknown = set(service.rejections.counts) - KNOWN
    assert not unknown, unknown


# -- status -------------------------------------------------------------------------------


@FUZZ
@given(payload=payloads(status_like("a1")))
@example(payload=b"[" * 100_000)
@example(payload=b'{"agent": "a1", "state": "online", "ts": ' + b"9" * 5000 + b"}")
def test_agent_status_handler_survives_anything(
    service: CoordinatorService, payload: bytes
) -> None:
    route(service, TOPICS.agent_status("a1"), payload)


def test_the_findings_status_payloads_are_counted_not_fatal(service: CoordinatorService) -> None:
    route(service, TOPICS.agent_status("a1"), b"[" * 100_000)
    route(
        service,
        TOPICS.agent_status("a1"),
        b'{"agent":"a1","state":"online","ts":' + b"9" * 5000 + b"}",
    )
    assert service.rejections.counts == {"malformed": 2}
    route(service, TOPICS.agent_status("a1"), b'{"agent": "a1", "state": "online"}')
    assert "a1" in service.registry.online()


# -- submissions --------------------------------------------------------------------------

job_like = st.fixed_dictionaries(
    {
        "config": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["j", "bad/name", ""]) | json_values,
                "model": st.sampled_from(
                    ["fedbus.examples.digits:make_model", "os:_exit", "nosuch.mod:f"]
                )
                | json_values,
                "data": st.just("fedbus.examples.digits:load_partition") | json_values,
                "rounds": st.integers() | json_values,
                "selector": json_values,
            },
        )
        | json_values,
        "source": st.text(max_size=20) | json_values,
    },
    optional={"new_run": json_values, "schema_version": json_values},
)


@FUZZ
@given(payload=payloads(job_like))
def test_submission_handler_survives_anything(service: CoordinatorService, payload: bytes) -> None:
    route(service, TOPICS.job_submit(), payload)


def test_a_submission_naming_an_unimportable_model_is_refused_with_its_reason(
    service: CoordinatorService,
) -> None:
    config = {"name": "j", "model": "fedbus.examples.nosuch:make_model", "data": "x.y:z"}
    route(service, TOPICS.job_submit(), as_bytes({"config": config}))
    assert service.rejections.counts == {"bad_job": 1}
    assert "field model" in service.failures["j"] and "nosuch" in service.failures["j"]
    assert service.results == {"j": False} and not service.runners


# -- updates and results (decoded by the job runner) -------------------------------------


def envelope(meta: Any, entries: Any = ()) -> bytes:
    header = msgpack.packb({"m": meta, "t": entries}, use_bin_type=True, default=str)
    start = -(-(8 + len(header)) // 64) * 64
    return b"FBT1" + struct.pack("<I", len(header)) + header + bytes(start - 8 - len(header))


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
update_like = st.fixed_dictionaries(
    {},
    optional={
        "schema_version": st.just(1) | msgpack_values,
        "job": st.just("j") | msgpack_values,
        "round": st.integers() | msgpack_values,
        "agent": st.just("a1") | msgpack_values,
        "task_id": st.just("t") | msgpack_values,
        "base_version": st.integers() | msgpack_values,
        "model_version": st.integers() | msgpack_values,
        "num_examples": st.integers(min_value=-(2**63), max_value=2**64 - 1) | msgpack_values,
        "accuracy": st.floats() | msgpack_values,
        "metrics": msgpack_values,
        "validation": msgpack_values,
        "timings": msgpack_values,
    },
)
envelopes = st.one_of(
    st.builds(envelope, update_like),
    st.builds(envelope, update_like, st.lists(msgpack_values, max_size=3)),
    st.builds(envelope, msgpack_values, msgpack_values),
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"FBT1" + b),
)


@FUZZ
@given(payload=envelopes)
def test_update_decoding_only_ever_rejects(payload: bytes) -> None:
    try:
        decode_update(payload, 1 << 16)
    except Rejected as exc:
        assert exc.reason in {"oversized", "malformed", "schema"}, exc


@FUZZ
@given(payload=envelopes)
def test_result_decoding_only_ever_rejects(payload: bytes) -> None:
    try:
        decode_result(payload, 1 << 16)
    except Rejected as exc:
        assert exc.reason in {"oversized", "malformed", "schema"}, exc


@FUZZ
@given(payload=payloads(st.just({"job": "j", "event": "ROUND_END", "round": 1, "ts": 0.0})))
def test_event_decoding_only_ever_rejects(payload: bytes) -> None:
    try:
        decode_json(Event, payload)
    except InvalidMessage as exc:
        assert exc.reason in {"oversized", "malformed", "schema"}, exc


# What a broker delivers: a concrete topic (no wildcards, not empty), anything else inside.
concrete_topics = st.text(min_size=1, max_size=60).filter(lambda t: "+" not in t and "#" not in t)
fedbus_topics = (
    st.lists(
        st.sampled_from(
            ["fedbus", "jobs", "agents", "j", "a1", "updates", "status", "", "..", "x y"]
        ),
        min_size=1,
        max_size=6,
    )
    .map("/".join)
    .filter(bool)
)


@FUZZ
@given(topic=concrete_topics | fedbus_topics, payload=st.binary(max_size=50))
def test_any_topic_is_routed_or_counted(
    service: CoordinatorService, topic: str, payload: bytes
) -> None:
    route(service, topic, payload)


# -- chunks (updates on the coordinator, models on the agents: one Reassembler) ----------

MAX_BYTES, SENDER_CAP, TOTAL_CAP = 4096, 6000, 10_000


def raw_chunk(transfer: Any, index: Any, count: Any, total: Any, digest: Any, body: bytes) -> bytes:
    header = msgpack.packb([transfer, index, count, total, digest], use_bin_type=True)
    return b"FBC1" + struct.pack("<I", len(header)) + header + body


small_ints = st.integers(min_value=-2, max_value=5000) | st.sampled_from([2**31, 2**63 - 1])
chunks = st.one_of(
    st.builds(
        raw_chunk,
        st.sampled_from(["t1", "t2", "t3"]),
        small_ints,
        small_ints,
        small_ints,
        st.sampled_from([bytes(32), b"\x01" * 32]),
        st.binary(max_size=2000),
    ),
    st.builds(
        lambda payload, t, size, i: list(split(payload, t, size))[
            i % max(1, -(-len(payload) // size))
        ],
        st.binary(max_size=3000),
        st.sampled_from(["t1", "t2"]),
        st.integers(min_value=1, max_value=1500),
        st.integers(min_value=0, max_value=10),
    ),
    st.binary(max_size=100).map(lambda b: b"FBC1" + b),
)


@FUZZ
@given(
    stream=st.lists(st.tuples(st.sampled_from(["a", "b"]), chunks, st.floats(0, 30)), max_size=12)
)
def test_reassembly_refuses_or_completes_and_never_holds_more_than_its_caps(
    stream: list[tuple[str, bytes, float]],
) -> None:
    r = Reassembler(
        max_bytes=MAX_BYTES, max_pending_bytes=TOTAL_CAP, timeout=10.0, max_sender_bytes=SENDER_CAP
    )
    now = 0.0
    for key, payload, step in stream:
        now += step
        try:
            done = r.offer(key, payload, now)
        except InvalidMessage as exc:
            assert exc.reason in {"malformed", "oversized", "integrity"}, exc
        else:
            assert done is None or len(done) <= MAX_BYTES
        assert 0 <= r.pending_bytes <= TOTAL_CAP
        assert r.held_by("a") <= SENDER_CAP and r.held_by("b") <= SENDER_CAP
        assert r.held_by("a") + r.held_by("b") == r.pending_bytes
    r.expire(now + 11.0)
    assert r.pending_bytes == 0
