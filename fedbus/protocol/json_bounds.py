"""JSON parsing with bounds a hostile sender cannot step over.

``json.loads`` on its own lets one message end a process: 100,000 nested ``[`` raise
RecursionError, an integer of 5,000 digits raises ValueError (CPython's digit limit),
and neither is a ``JSONDecodeError``. :func:`load_json` checks size and nesting depth
before parsing, caps integer literals, refuses NaN / Infinity (which strict JSON does
not have), and turns every failure into ``InvalidMessage``.

The depth check is one pass over the text with the string literals cut out, so it costs
about as much as the parse itself and never recurses.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fedbus.protocol.errors import InvalidMessage

# Status, telemetry, events and job submissions are a few KB; a job config with a long
# selector table stays far below this.
MAX_JSON_BYTES = 1 << 20
# fedbus's own messages nest four deep at most (a submission: config -> selector -> knobs).
MAX_JSON_DEPTH = 32
# 64-bit integers have 20 digits; nothing fedbus sends is larger.
MAX_INT_DIGITS = 24

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def json_depth(text: bytes) -> int:
    """The deepest nesting of arrays and objects in ``text`` (string contents ignored)."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", text))
    depth = deepest = 0
    for byte in brackets:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(literal)} digits exceeds {MAX_INT_DIGITS}")
    return int(literal)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(
    payload: bytes | bytearray | memoryview,
    what: str,
    *,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """The parsed value of ``payload``, or InvalidMessage naming ``what`` was wrong."""
    raw = bytes(payload)
    if len(raw) > max_bytes:
        raise InvalidMessage("oversized", f"{what}: {len(raw)} bytes exceeds {max_bytes}")
    depth = json_depth(raw)
    if depth > max_depth:
        raise InvalidMessage("malformed", f"{what}: nesting depth {depth} exceeds {max_depth}")
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeError included
        raise InvalidMessage("malformed", f"{what}: not JSON: {exc}") from exc
