"""Compute packages: a job's own code, shipped to agents over the bus, pinned by SHA-256.

A package is a directory with a ``fedbus.yaml`` (:mod:`fedbus.packages.spec`), packed into
a deterministic ``.tar.gz`` (:mod:`fedbus.packages.archive`), unpacked on agents into a
cache keyed by its hash (:mod:`fedbus.packages.cache`), and run through its entry points
(:mod:`fedbus.packages.entry`). Agent side: Python 3.10 compatible.

Errors::

    PackageError                  (ValueError)
    ├── PackageSpecError          a fedbus.yaml that cannot be used (names file and field)
    ├── PackageRefused            bytes that fail their pin, or a hash the agent does not trust
    ├── PackageUnavailable        a package that did not arrive in time (may work next round)
    └── PackageRunError           an entry point that failed or returned something unusable
"""

from __future__ import annotations


class PackageError(ValueError):
    """Root of the package errors."""


class PackageSpecError(PackageError):
    """A package spec (``fedbus.yaml``) that cannot be used."""


class PackageRefused(PackageError):
    """A package an agent will not run: wrong hash, untrusted, or an unsafe archive."""


class PackageUnavailable(PackageError):
    """A package that did not arrive in time: not a refusal, the next round may get it."""


class PackageRunError(PackageError):
    """An entry point of a package that failed or returned something unusable."""
