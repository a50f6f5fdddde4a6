"""Choosing the torch device and thread count."""

from __future__ import annotations

import torch

from keyfer.errors import KeyferError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; anything else must be a valid device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise KeyferError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KeyferError(f"device {name!r} asked for, but no CUDA GPU is available")
    return device
