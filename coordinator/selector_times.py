"""This round's time-model estimates for the selector's per-client plans (virtual clock).

A selector registers each client's compute and comm times once, from the time model at
registration. PyramidFL plans its idle-time local steps and dropout from those parts, but
a device's speed moves with its trace (availability, battery, link rate) and each round's
noise draw: on the FedScale-style fleet, plans from registration-time numbers overran and
PyramidFL's rounds lasted 202 s against Oort's 127 s. Refreshing the dispatched clients'
parts with *this* round's estimates (the very numbers the emulated agents will report
for the job's own steps) lets the plan fill idle time without lengthening the round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from client_selectors.base import ClientSelector
from fedbus.fleet import Fleet
from fedbus.fleet.virtual_round import RoundWork, simulate_round


def refresh_estimates(
    selector: ClientSelector,
    fleet: Fleet,
    agents: Iterable[str],
    start: float,
    work: Callable[[str], RoundWork],
    *,
    seed: int,
    round_: int,
) -> None:
    """Give the selector each agent's duration, compute and comm time for this round."""
    for agent in agents:
        times = simulate_round(fleet.by_id(agent), start, work(agent), seed=seed, round_=round_)
        selector.update_duration(agent, times.total, times.t_comp, times.t_dl + times.t_ul)
