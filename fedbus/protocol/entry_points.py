"""Resolve ``module:callable`` entry points named by a job (model and data)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

# Module prefixes renamed when the shared library moved under the ``fedbus`` namespace.
# Old job files and tasks from older coordinators still name them; accepted for one
# release with a DeprecationWarning, then removed.
RENAMED_PREFIXES: dict[str, str] = {
    "examples": "fedbus.examples",
    "fleet": "fedbus.fleet",
    "fedbus_protocol": "fedbus.protocol",
}


def canonical(spec: str) -> str:
    """``spec`` with a renamed module prefix replaced by its new name (warns once per call)."""
    module_name, sep, attr = spec.partition(":")
    head, dot, rest = module_name.partition(".")
    new = RENAMED_PREFIXES.get(head)
    if new is None:
        return spec
    renamed = f"{new}{dot}{rest}{sep}{attr}"
    warnings.warn(
        f"entry point {spec!r} uses a renamed module; write {renamed!r} (the old name is "
        "accepted for one release)",
        DeprecationWarning,
        stacklevel=3,
    )
    return renamed


class EntryPointError(ValueError):
    """An entry point that cannot be imported or is not callable."""


def resolve(spec: str) -> Callable[..., Any]:
    spec = canonical(spec)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise EntryPointError(f"entry point {spec!r} must look like 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EntryPointError(
            f"entry point {spec!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    target: Callable[..., Any] | None = getattr(module, attr, None)
    if not callable(target):
        raise EntryPointError(
            f"entry point {spec!r}: {attr!r} is not a callable in {module_name!r}"
        )
    return target
