"""Choosing the torch device and thread count."""

from __future__ import annotations

import torch

from keyfer.errors import KeyferError

DEVICE_TYPES = ("cpu", "cuda", "mps")
"""Device types keyfer runs on: ``cuda`` and ``mps`` (Apple GPUs) only where this machine and
this PyTorch build have them."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; anything else must name a device of
    :data:`DEVICE_TYPES` that is available here, or a one-line :class:`KeyferError` says why."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise KeyferError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise KeyferError(f"device {name!r} asked for, but no CUDA GPU is available")
        if device.index is not None and device.index >= count:
            raise KeyferError(f"device {name!r} asked for, but there are only cuda:0..{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise KeyferError(
            f"device {name!r} asked for, but this machine or PyTorch build has no MPS (Apple GPU)"
        )
    return device
