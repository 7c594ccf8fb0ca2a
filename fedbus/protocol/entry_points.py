"""Resolve ``module:callable`` entry points named by a job (model and data).

A task names the entry points an agent imports and calls, so whoever can publish a task
could otherwise run any importable callable on the agent (``os:_exit``). Agents
therefore resolve only entry points under module prefixes they were configured to trust
(``edge-agent run --trust PREFIX``; :data:`DEFAULT_TRUSTED` when none is given); anything
else raises :class:`UntrustedEntryPoint` *before* its module is imported, and the agent
reports the task as failed with that reason, which the coordinator shows.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable, Sequence
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


# The examples shipped with fedbus: what an agent trusts when told nothing else.
DEFAULT_TRUSTED: tuple[str, ...] = ("fedbus.examples",)


class EntryPointError(ValueError):
    """An entry point that cannot be imported or is not callable."""


class UntrustedEntryPoint(EntryPointError):
    """An entry point outside the module prefixes this process trusts."""


def is_trusted(module_name: str, trusted: Sequence[str]) -> bool:
    """``module_name`` is one of ``trusted`` or inside one of them (``a.b`` trusts ``a.b.c``,
    not ``a.bc``)."""
    return any(module_name == p or module_name.startswith(p + ".") for p in trusted)


def find_module(spec: str) -> None:
    """Check that ``spec``'s module exists without running it (EntryPointError if not)."""
    spec = canonical(spec)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise EntryPointError(f"entry point {spec!r} must look like 'package.module:callable'")
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:  # a parent package that is missing or broken
        raise EntryPointError(f"entry point {spec!r}: cannot find {module_name!r}: {exc}") from exc
    if found is None:
        raise EntryPointError(f"entry point {spec!r}: no module named {module_name!r}")


def resolve(spec: str, trusted: Sequence[str] | None = None) -> Callable[..., Any]:
    """The callable ``spec`` names; with ``trusted``, only under those module prefixes."""
    spec = canonical(spec)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise EntryPointError(f"entry point {spec!r} must look like 'package.module:callable'")
    if trusted is not None and not is_trusted(module_name, trusted):
        raise UntrustedEntryPoint(
            f"entry point {spec!r} is not trusted by this agent (trusted module prefixes: "
            f"{', '.join(trusted) or 'none'}; add one with --trust)"
        )
    if attr.startswith("_"):
        raise EntryPointError(f"entry point {spec!r}: private names cannot be entry points")
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
