"""Per-round resource summary for the update's metadata: peak memory, energy where measurable.

``begin()`` before a task's training resets the CUDA allocator's peak and reads the NVML
energy counter; ``end()`` after it returns ``peak_rss_mb`` (the process's peak resident
memory so far: the OS keeps no per-round peak), ``gpu_peak_mb`` (this round's CUDA
allocator peak) and ``energy_j`` (NVML's total-energy counter difference, on GPUs that
have one). Anything not measurable on this device is left out.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from typing import Any

import torch


class RoundResources:
    def __init__(self, device: torch.device, nvml: Any | None = None, handle: Any = None) -> None:
        self.device = device
        self._nvml, self._handle = nvml, handle
        self._energy_mj: float | None = None

    def begin(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._energy_mj = self._energy()

    def end(self) -> dict[str, float]:
        summary = {"peak_rss_mb": peak_rss_mb()}
        if self.device.type == "cuda":
            summary["gpu_peak_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        energy = self._energy()
        if energy is not None and self._energy_mj is not None:
            summary["energy_j"] = (energy - self._energy_mj) / 1000.0
        return summary

    def _energy(self) -> float | None:
        if self._nvml is None:
            return None
        with contextlib.suppress(Exception):  # boards without the counter
            return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        return None


def peak_rss_mb() -> float:
    """The process's peak resident memory (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
