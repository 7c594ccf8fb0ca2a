"""Exceptions of the selector package.

    SelectorError
    ├── SelectorConfigError   bad selector name or knobs (local fault: fail loudly); names the field
    ├── UnknownClientError    an id that was never registered (local fault of the caller)
    └── InvalidFeedbackError  a non-finite reward or a negative/non-finite duration (remote
                              data the caller should have rejected; nothing was changed)

Every selector method either succeeds completely or raises one of these and changes nothing.
"""

from __future__ import annotations


class SelectorError(Exception):
    """Root of every error raised by ``client_selectors``."""


class SelectorConfigError(SelectorError, ValueError):
    """A selector name or knob that cannot be used; ``field`` names the first bad field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownClientError(SelectorError, LookupError):
    """A client id that is not registered with this selector."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"client {client_id!r} is not registered with this selector")
        self.client_id = client_id


class InvalidFeedbackError(SelectorError, ValueError):
    """Feedback or a duration that would poison the selector's state (NaN, inf, negative time)."""
