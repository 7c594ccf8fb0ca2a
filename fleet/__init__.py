"""Emulated device fleets: profiles, cyclic traces, the time model and fleet files.

Pure logic lives in :mod:`fleet.trace`, :mod:`fleet.profile`, :mod:`fleet.time_model`,
:mod:`fleet.device_state`, :mod:`fleet.builders` (given sources) and
:mod:`fleet.summary`; only :mod:`fleet.fleet_file`, :mod:`fleet.flash_data`,
:mod:`fleet.fedscale` (its readers) and :mod:`fleet.cli` touch files.
Errors: see :mod:`fleet.errors`. Format and formulas: docs/fleet.md.
"""

from fleet.errors import (
    FleetError,
    FleetFileError,
    InvalidProfile,
    InvalidTrace,
    TraceSourceError,
)
from fleet.fleet_file import load_fleet, save_fleet
from fleet.profile import STATIC_KEYS, DeviceProfile, Fleet
from fleet.time_model import (
    PhaseTimes,
    compute_rate,
    fedscale_completion_time,
    fedscale_is_active,
    round_time,
    transfer_time,
    workload_flops,
)
from fleet.trace import (
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
