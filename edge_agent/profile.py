"""What an agent says about itself in its retained status (read once at start).

Its hardware, and, when told the job's data at start-up, its training-set size: the
coordinator registers an agent with the selectors before sending it any task, and Oort's
initial reward and PyramidFL's initial gradient utility are that size (1 when unknown, so
every agent would look alike until it has trained once).
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

from edge_agent.trainer import LocalTrainer
from fedbus.protocol.messages import AgentProfile, Scalar

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def jetson_model(path: Path = DEVICE_TREE_MODEL) -> str | None:
    """The board name when the device tree names an NVIDIA Jetson, else None."""
    try:
        name = path.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
    except OSError:
        return None
    return name if "jetson" in name.lower() else None


@dataclass(frozen=True)
class DataSpec:
    """The job's data entry point and arguments, as the job names them (``data``, ``data_args``)."""

    data: str
    data_args: Mapping[str, Scalar] = field(default_factory=dict)


def partition_size(trainer: LocalTrainer, spec: DataSpec, partition: int) -> int:
    """Training samples of ``partition``, as the trainer will train on them.

    Loaded through the trainer's partition cache, so the first task of a job with the same
    data arguments finds the partition already loaded instead of loading it twice.
    """
    return trainer.load_partition(spec.data, spec.data_args, partition).num_train


def detect_profile(
    device: torch.device, *, partition: int | None = None, num_samples: int | None = None
) -> AgentProfile:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    jetson = jetson_model()
    memory = psutil.virtual_memory()
    # Keys Bliss's static features read (os, device_type, ram_gb), and what else is known.
    static: dict[str, Scalar] = {
        "os": platform.system().lower(),
        "device_type": "jetson" if jetson else "server",
        "ram_gb": round(memory.total / 2**30, 2),
        "ram_available_gb": round(memory.available / 2**30, 2),
    }
    if device.type == "cuda":
        static["gpu_mem_gb"] = round(
            torch.cuda.get_device_properties(device).total_memory / 2**30, 2
        )
    static.update(battery())
    return AgentProfile(
        hostname=socket.gethostname(),
        platform=f"{platform.system()} {platform.machine()}",
        cpu_count=psutil.cpu_count(logical=True) or 0,
        ram_gb=round(psutil.virtual_memory().total / 2**30, 2),
        torch_device=str(device),
        gpu_name=gpu,
        jetson_model=jetson,
        partition=partition,
        num_samples=num_samples,
        static=static,
    )


def battery() -> dict[str, Scalar]:
    """Battery charge and whether it is plugged in, where psutil sees a battery."""
    try:
        state = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):  # no sensor API on this platform
        return {}
    if state is None:
        return {}
    return {"battery_percent": float(state.percent), "power_plugged": bool(state.power_plugged)}
