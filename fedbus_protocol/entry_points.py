"""Resolve ``module:callable`` entry points named by a job (model and data)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class EntryPointError(ValueError):
    """An entry point that cannot be imported or is not callable."""


def resolve(spec: str) -> Callable[..., Any]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise EntryPointError(f"entry point {spec!r} must look like 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EntryPointError(
            f"entry point {spec!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    target = getattr(module, attr, None)
    if not callable(target):
        raise EntryPointError(
            f"entry point {spec!r}: {attr!r} is not a callable in {module_name!r}"
        )
    return target
