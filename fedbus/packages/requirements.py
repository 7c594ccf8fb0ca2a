"""A compute package's ``requirements``, checked against what the agent has installed.

An agent does not install what a package asks for (that would run code no one pinned): it
checks the requirements against its own distributions before it runs any of the package's
code, and refuses the package with what is missing, so the job excludes the agent with a
reason an operator can act on instead of failing every round with an ImportError.
"""

from __future__ import annotations

import importlib.metadata

from packaging.requirements import InvalidRequirement, Requirement


def parse(requirement: str) -> Requirement:
    """``requirement`` (PEP 508) parsed; ValueError says what is wrong with it."""
    try:
        return Requirement(requirement)
    except InvalidRequirement as exc:
        raise ValueError(f"{requirement!r} is not a requirement: {exc}") from exc


def unmet(requirements: list[str]) -> list[str]:
    """Each requirement this Python environment does not satisfy, with what it has."""
    missing = []
    for text in requirements:
        requirement = parse(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not for this platform
        try:
            have = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"{text} (not installed)")
            continue
        if not requirement.specifier.contains(have, prereleases=True):
            missing.append(f"{text} (installed: {have})")
    return missing
