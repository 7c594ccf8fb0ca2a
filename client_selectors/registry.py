"""The explicit name -> class registry and the one validated way to build a selector.

Selectors are looked up in a fixed mapping (never imported from a string built at run
time). ``make_selector`` validates the knobs with the class's frozen pydantic model and
turns every validation problem into a :class:`SelectorConfigError` that names the field,
e.g. ``selector 'oort' knob 'round_threshold': Input should be less than or equal to 100``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pydantic import ValidationError

from client_selectors.base import ClientSelector
from client_selectors.bliss import BlissSelector
from client_selectors.errors import SelectorConfigError
from client_selectors.oort import OortSelector
from client_selectors.pyramidfl import PyramidFLSelector
from client_selectors.uniform import RandomSelector

SELECTORS: Mapping[str, type[ClientSelector]] = MappingProxyType(  # type: ignore[type-arg]
    {
        "random": RandomSelector,
        "oort": OortSelector,
        "pyramidfl": PyramidFLSelector,
        "bliss": BlissSelector,
    }
)


def make_selector(name: str, knobs: Mapping[str, object], seed: int) -> ClientSelector:  # type: ignore[type-arg]
    """Build the selector ``name`` with validated ``knobs`` and its own RNG seeded by ``seed``."""
    try:
        cls = SELECTORS[name]
    except KeyError:
        raise SelectorConfigError(
            f"unknown selector {name!r}; choose one of {', '.join(SELECTORS)}", field="name"
        ) from None
    try:
        model = cls.Knobs.model_validate(dict(knobs))
    except ValidationError as exc:
        problems = []
        first: str | None = None
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "knobs"
            first = first or where
            problems.append(f"knob {where!r}: {error['msg']}")
        raise SelectorConfigError(f"selector {name!r} " + "; ".join(problems), field=first) from exc
    return cls(model, seed)
