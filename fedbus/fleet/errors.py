"""The exceptions of the ``fleet`` package.

::

    FleetError                 root; catch this to catch everything below
     ├── InvalidTrace          (also ValueError) a trace or window list breaks its rules
     ├── InvalidProfile        (also ValueError) a device profile or fleet breaks its rules
     ├── FleetFileError        a fleet file cannot be read or written; names file and field
     └── TraceSourceError      an input data set (FLASH files, FedScale pickles) is missing
                               or malformed; names the file and, where known, the field

All of them are *local* faults: bad input handed to this package by its caller.
"""

from __future__ import annotations


class FleetError(Exception):
    """Root of every error raised by :mod:`fleet`."""


class InvalidTrace(FleetError, ValueError):
    """A piecewise-constant series or an activity-window list is malformed.

    ``field`` names the offending part (``"times"``, ``"values"``, ``"cycle"``, ...).
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class InvalidProfile(FleetError, ValueError):
    """A device profile (or a fleet of them) is malformed; ``field`` names the part."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class FleetFileError(FleetError):
    """A fleet file cannot be read or written. The message names the file and the field."""

    def __init__(self, path: str, field: str | None, problem: str) -> None:
        where = f"{path}: {field}: " if field else f"{path}: "
        super().__init__(where + problem)
        self.path = path
        self.field = field
        self.problem = problem


class TraceSourceError(FleetError):
    """An input data set for a builder is missing or malformed."""

    def __init__(self, path: str, problem: str, field: str | None = None) -> None:
        where = f"{path}: {field}: " if field else f"{path}: "
        super().__init__(where + problem)
        self.path = path
        self.field = field
        self.problem = problem
