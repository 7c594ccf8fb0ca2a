"""Old entry-point names (before the ``fedbus`` namespace) still resolve, with a warning."""

import pytest

from fedbus.examples import digits
from fedbus.protocol.entry_points import canonical, resolve


def test_old_examples_name_resolves_to_the_namespaced_module_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match=r"fedbus\.examples\.digits:make_model"):
        target = resolve("examples.digits:make_model")
    assert target is digits.make_model


def test_current_names_pass_through_without_a_warning(recwarn: pytest.WarningsRecorder) -> None:
    assert canonical("fedbus.examples.digits:make_model") == "fedbus.examples.digits:make_model"
    assert resolve("fedbus.examples.digits:make_model") is digits.make_model
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]
