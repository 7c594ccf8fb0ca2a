"""Emulated device fleets: profiles, cyclic traces, the time model and fleet files.

Pure logic lives in :mod:`fedbus.fleet.trace`, :mod:`fedbus.fleet.profile`, :mod:`fedbus.fleet.time_model`,
:mod:`fedbus.fleet.device_state`, :mod:`fedbus.fleet.builders` (given sources) and
:mod:`fedbus.fleet.summary`; only :mod:`fedbus.fleet.fleet_file`, :mod:`fedbus.fleet.flash_data`,
:mod:`fedbus.fleet.fedscale` (its readers) and :mod:`fedbus.fleet.cli` touch files.
Errors: see :mod:`fedbus.fleet.errors`. Format and formulas: docs/fleet.md.
"""

from fedbus.fleet.errors import (
    FleetError,
    FleetFileError,
    InvalidProfile,
    InvalidTrace,
    TraceSourceError,
)
from fedbus.fleet.fleet_file import load_fleet, save_fleet
from fedbus.fleet.profile import STATIC_KEYS, DeviceProfile, Fleet
from fedbus.fleet.time_model import (
    PhaseTimes,
    compute_rate,
    fedscale_completion_time,
    fedscale_is_active,
    round_time,
    transfer_time,
    workload_flops,
)
from fedbus.fleet.trace import (
    DEFAULT_CYCLE_S,
    ActivityWindows,
    DeviceTrace,
    StepSeries,
    dynamic_windows,
)

__all__ = [
    "DEFAULT_CYCLE_S",
    "STATIC_KEYS",
    "ActivityWindows",
    "DeviceProfile",
    "DeviceTrace",
    "Fleet",
    "FleetError",
    "FleetFileError",
    "InvalidProfile",
    "InvalidTrace",
    "PhaseTimes",
    "StepSeries",
    "TraceSourceError",
    "compute_rate",
    "dynamic_windows",
    "fedscale_completion_time",
    "fedscale_is_active",
    "load_fleet",
    "round_time",
    "save_fleet",
    "transfer_time",
    "workload_flops",
]
