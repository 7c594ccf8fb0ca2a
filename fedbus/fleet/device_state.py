"""Synthesised CPU-availability and battery series for fleets whose data lack them.

Neither the FLASH files nor a synthetic fleet carry Bliss's "carat" channels, so they are
generated on a fixed grid (30 min cells over the activity cycle) from a seeded generator,
driven by the device's online windows (FLASH's ``ready_time`` means idle + charging + WiFi):

- coverage c_i: the share of cell i inside an online window.
- availability_i = c_i * U(85, 100) + (1 - c_i) * (35 + 50 * busy_i), where busy is an
  AR(1) process in [0, 1] (phi 0.8): idle phones lend most of their CPU.
- battery: charges at U(20, 40) %/h while online (charging) or while plugged in after
  falling below U(10, 25) % (until 95 %), drains at U(2, 6) %/h otherwise, clipped to
  [1, 99]; simulated over two cycles and the second kept, so the wrap is nearly seamless.

All values are rounded (availability to 0.1 %, battery to whole %), as Bliss's are.
"""

from __future__ import annotations

import numpy as np

from fedbus.fleet.trace import ActivityWindows, StepSeries

STATE_STEP_S = 1800.0
"""Width of one availability/battery cell, seconds."""


def coverage(active: ActivityWindows, step: float = STATE_STEP_S) -> np.ndarray:
    """Share of each ``step``-wide cell of the cycle that lies inside an online window."""
    cycle = active.cycle
    edges = np.append(np.arange(0.0, cycle, step), cycle)
    if len(active) == 0:
        return np.zeros(edges.size - 1)
    lengths = active.ends - active.starts
    online_until = np.clip(edges[:, None] - active.starts[None, :], 0.0, lengths[None, :]).sum(1)
    return np.clip(np.diff(online_until) / np.diff(edges), 0.0, 1.0)


def ar1_unit(rng: np.random.Generator, n: int, phi: float = 0.8) -> np.ndarray:
    """An AR(1) walk that stays in [0, 1]: x_i = phi x_{i-1} + (1 - phi) u_i."""
    out = np.empty(n)
    x = rng.random()
    for i, u in enumerate(rng.random(n)):
        x = phi * x + (1.0 - phi) * u
        out[i] = x
    return out


def _battery(cov: np.ndarray, hours: float, rng: np.random.Generator) -> np.ndarray:
    drain, charge = rng.uniform(2.0, 6.0), rng.uniform(20.0, 40.0)
    plug_below = rng.uniform(10.0, 25.0)
    level, plugged = rng.uniform(30.0, 95.0), False
    out = np.empty(cov.size)
    for lap in range(2):
        for i, c in enumerate(cov):
            if lap == 1:
                out[i] = round(level)
            charging = 1.0 if plugged else float(c)
            level += hours * (charge * charging - drain * (1.0 - charging))
            level = min(max(level, 1.0), 99.0)
            if level < plug_below:
                plugged = True
            elif level >= 95.0:
                plugged = False
    return out


def synthesize_state(
    active: ActivityWindows, rng: np.random.Generator, step: float = STATE_STEP_S
) -> tuple[StepSeries, StepSeries]:
    """(availability %, battery %) series on a shared ``step`` grid over ``active.cycle``."""
    cov = coverage(active, step)
    times = np.arange(cov.size) * step
    busy = ar1_unit(rng, cov.size)
    idle = rng.uniform(85.0, 100.0, cov.size)
    availability = np.round(cov * idle + (1.0 - cov) * (35.0 + 50.0 * busy), 1)
    battery = _battery(cov, step / 3600.0, rng)
    return (
        StepSeries(times, availability, active.cycle),
        StepSeries(times, battery, active.cycle),
    )
