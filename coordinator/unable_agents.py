"""Agents that cannot run a job's code, told apart from agents that merely failed a round.

An agent that lacks the job's entry point (``EntryPointError``), does not trust it
(``UntrustedEntryPoint``: outside its ``--trust`` prefixes) or refuses its compute
package (``PackageRefused``: untrusted hash, bytes that fail their pin, an unsafe archive)
will fail every round of the job the same way; picking it again only costs rounds. The
agent says why in its failed update; the job stops picking it and shows the reason. A
failure of any other kind (training diverged, a package that was slow to arrive) may not
repeat, and leaves the agent in. Pure: reasons in, the agents to exclude out.
"""

from __future__ import annotations

from collections.abc import Mapping

# The exception names edge_agent.agent.describe() puts first in a failure's reason.
CANNOT_RUN_PREFIXES = ("EntryPointError:", "UntrustedEntryPoint:", "PackageRefused:")


def unable_to_run(reasons: Mapping[str, str]) -> dict[str, str]:
    """The agents among ``reasons`` (agent -> failure reason) that cannot run the job."""
    return {a: r for a, r in sorted(reasons.items()) if r.startswith(CANNOT_RUN_PREFIXES)}
