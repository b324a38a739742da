"""What a result was measured on: recorded next to every number we publish."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpuinfo_field(key: str) -> str | None:
    """The first ``key : value`` of Linux's /proc/cpuinfo; None where there is none (other OSes)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def cpu_model() -> str:
    """The CPU's marketing name where the OS tells it, else the architecture."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Platform, CPU, core and thread counts, library versions and the GPU, if one is used."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    try:
        import torchvision

        vision = torchvision.__version__
    except ImportError:  # torchvision is only a test/extra dependency
        vision = None
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": vision,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def describe(info: dict[str, Any]) -> str:
    """One line for the foot of a printed table."""
    where = info["gpu"] or f"{info['cpu']}, {info['threads']} threads"
    return f"{where}; torch {info['torch']}; Python {info['python']}"
