"""Agents resolve entry points only under the module prefixes they trust."""

from __future__ import annotations

import sys

import pytest

from fedbus.protocol.entry_points import (
    DEFAULT_TRUSTED,
    EntryPointError,
    UntrustedEntryPoint,
    is_trusted,
    resolve,
)


@pytest.mark.parametrize("spec", ["os:_exit", "os:abort", "subprocess:run", "fedbus.examplesx:f"])
def test_an_untrusted_entry_point_is_refused_before_its_module_is_imported(spec: str) -> None:
    with pytest.raises(UntrustedEntryPoint, match="not trusted by this agent"):
        resolve(spec, DEFAULT_TRUSTED)


def test_the_refusal_imports_nothing() -> None:
    sys.modules.pop("this_module_does_not_exist_either", None)
    with pytest.raises(UntrustedEntryPoint):
        resolve("this_module_does_not_exist_either:f", ("fedbus.examples",))


def test_trusted_prefixes_cover_their_submodules_only() -> None:
    assert is_trusted("fedbus.examples.digits", ("fedbus.examples",))
    assert is_trusted("fedbus.examples", ("fedbus.examples",))
    assert not is_trusted("fedbus.examples_evil", ("fedbus.examples",))
    assert callable(resolve("fedbus.examples.digits:make_model", DEFAULT_TRUSTED))


def test_private_names_are_never_entry_points() -> None:
    with pytest.raises(EntryPointError, match="private"):
        resolve("os:_exit")
