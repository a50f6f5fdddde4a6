"""GPU speed options of the training engines: bf16 autocast and ``torch.compile``."""

from __future__ import annotations

import torch
from torch import nn

from keyfer.errors import KeyferError
from keyfer.train.config import TrainConfig


def autocast(train: TrainConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA when ``train.bf16``; disabled (float32) on the CPU."""
    enabled = train.bf16 and device.type == "cuda"
    return torch.autocast(device.type, torch.bfloat16, enabled=enabled)


def compile_modules(train: TrainConfig, device: torch.device, *modules: nn.Module) -> None:
    """Compile ``modules`` in place (their state dict keys stay the same) when ``train.compile``.

    Raises :class:`KeyferError` on the CPU, where it is not supported here.
    """
    if not train.compile:
        return
    if device.type != "cuda":
        raise KeyferError(
            "train.compile is for CUDA GPUs; drop --set train.compile=true on the CPU"
        )
    for module in modules:
        module.compile()
