"""What an agent says about its hardware in its retained status (read once at start)."""

from __future__ import annotations

import platform
import socket
from pathlib import Path

import psutil
import torch

from fedbus_protocol.messages import AgentProfile

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def jetson_model(path: Path = DEVICE_TREE_MODEL) -> str | None:
    """The board name when the device tree names an NVIDIA Jetson, else None."""
    try:
        name = path.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
    except OSError:
        return None
    return name if "jetson" in name.lower() else None


def detect_profile(device: torch.device, *, partition: int | None = None) -> AgentProfile:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return AgentProfile(
        hostname=socket.gethostname(),
        platform=f"{platform.system()} {platform.machine()}",
        cpu_count=psutil.cpu_count(logical=True) or 0,
        ram_gb=round(psutil.virtual_memory().total / 2**30, 2),
        torch_device=str(device),
        gpu_name=gpu,
        jetson_model=jetson_model(),
        partition=partition,
    )
