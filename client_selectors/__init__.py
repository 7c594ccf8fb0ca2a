"""Client-selection policies for fedbus: random, Oort, PyramidFL and Bliss.

Pure Python + numpy (+ xgboost for Bliss's default regressor): no I/O, no MQTT, no
asyncio, no clock. The package is called ``client_selectors`` because a top-level package
named ``selectors`` would shadow the standard-library module that asyncio imports.

Build one with ``make_selector(name, knobs, seed)``; the interface is
:class:`ClientSelector` (``client_selectors.base``), the algorithms are specified in
ALGORITHMS.md §1 (Oort), §3 (PyramidFL) and §4 (Bliss).
"""

from client_selectors.base import (
    ClientId,
    ClientOverride,
    ClientProfile,
    ClientSelector,
    Selection,
    SelectorKnobs,
)
from client_selectors.bliss import BlissKnobs, BlissSelector, DynamicSource
from client_selectors.errors import (
    InvalidFeedbackError,
    SelectorConfigError,
    SelectorError,
    UnknownClientError,
)
from client_selectors.oort import OortKnobs, OortSelector
from client_selectors.pyramidfl import PyramidFLKnobs, PyramidFLSelector
from client_selectors.registry import SELECTORS, make_selector
from client_selectors.uniform import RandomKnobs, RandomSelector

__all__ = [
    "SELECTORS",
    "BlissKnobs",
    "BlissSelector",
    "ClientId",
    "ClientOverride",
    "ClientProfile",
    "ClientSelector",
    "DynamicSource",
    "InvalidFeedbackError",
    "OortKnobs",
    "OortSelector",
    "PyramidFLKnobs",
    "PyramidFLSelector",
    "RandomKnobs",
    "RandomSelector",
    "Selection",
    "SelectorConfigError",
    "SelectorError",
    "SelectorKnobs",
    "UnknownClientError",
    "make_selector",
]
