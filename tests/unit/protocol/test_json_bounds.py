"""Bounded JSON: every hostile shape is an InvalidMessage, never another exception."""

from __future__ import annotations

import pytest

from fedbus.protocol.errors import InvalidMessage
from fedbus.protocol.json_bounds import MAX_JSON_DEPTH, json_depth, load_json


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 100_000, "malformed"),  # RecursionError in json.loads
        (b'{"ts": ' + b"9" * 5000 + b"}", "malformed"),  # ValueError: integer digit limit
        (b'{"ts": ' + b"9" * 30 + b"}", "malformed"),  # past 64-bit range by far
        (b'{"ts": NaN}', "malformed"),
        (b"\xff\xfe", "malformed"),
        (b" " * (2 << 20), "oversized"),
    ],
)
def test_hostile_json_is_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        load_json(payload, "status")
    assert info.value.reason == reason


def test_depth_ignores_brackets_inside_strings() -> None:
    assert json_depth(b'{"a": ["[[[[", {"b": "\\"[["}]}') == 3
    nested = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert load_json(nested, "x") is not None
    with pytest.raises(InvalidMessage, match="depth"):
        load_json(b"[" + nested + b"]", "x")


def test_ordinary_json_parses() -> None:
    assert load_json(b'{"a": [1, -2.5e3, "x", null, true], "b": 18446744073709551615}', "x") == {
        "a": [1, -2500.0, "x", None, True],
        "b": 2**64 - 1,
    }
