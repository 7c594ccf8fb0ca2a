"""Time-model estimates the selector plans with (virtual clock).

A selector registers each client's compute and comm times once, from the time model at
registration, and then hears a duration back only from the rounds the client ran. A
device's speed moves with its trace (availability, battery, and above all its link rate),
so both go stale:

- **Before a selection** (:func:`current_estimates`) every online candidate's duration for
  the job's standard work (its ``local_steps``, a dense upload) is estimated from its state
  *now*, without this round's noise draw: what a device reports of its link and battery
  when it checks in. On the FLASH fleet (transfer-bound, 3G rate traces) the duration Oort
  stored at a client's last round ranked the online clients' current durations with a
  Spearman correlation of only 0.34-0.55, so its system utility chased stale speeds. In
  adaptive rounds the duration an agent reports is the budget it filled, not its speed,
  which this refresh also replaces before the next selection.
- **After the selection** (:func:`refresh_estimates`) the dispatched agents' parts are set
  to *this* round's estimates (the very numbers the emulated agents will report for the
  job's own steps), so PyramidFL plans idle-time steps and dropout that do not lengthen the
  round: from registration-time numbers its rounds on the FedScale-style fleet lasted 202 s
  against Oort's 127 s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from client_selectors.base import ClientSelector
from fedbus.fleet import Fleet
from fedbus.fleet.time_model import round_time
from fedbus.fleet.virtual_round import RoundWork, simulate_round


def current_estimates(
    selector: ClientSelector,
    fleet: Fleet,
    agents: Iterable[str],
    start: float,
    work: Callable[[str], RoundWork],
) -> None:
    """Give the selector each agent's standard-work duration from its state at ``start``.

    No noise draw: the selector learns the device's state, not this round's luck. Agents
    that could not finish at all (a dead trace segment) keep their stored duration.
    """
    for agent in agents:
        w = work(agent)
        times = round_time(
            fleet.by_id(agent), start, w.download_bytes, w.upload_bytes, w.flops, None
        )
        if math.isfinite(times.total):
            selector.update_duration(agent, times.total, times.t_comp, times.t_dl + times.t_ul)


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
