"""Building blocks shared by the BlazeFace and FaceMesh ports.

Both MediaPipe networks were trained in TensorFlow with ``SAME`` padding, which pads
asymmetrically (more at the bottom/right) when the stride is 2. The blocks reproduce that
exactly with an explicit ``F.pad`` so the ported weights give the same numbers as TFLite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding (before, after) for one spatial axis of length ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ResidualBlock(nn.Module):
    """Depthwise 3x3 (stride 1 or 2) -> pointwise 1x1, plus a shortcut, then an activation.

    With stride 2 the shortcut is a 2x2 max-pool; when the block widens the channels, the
    shortcut is zero-padded on the channel axis (MediaPipe's ``channel_padding``).

    Input (B, C_in, H, W), H and W even when ``stride == 2``; output (B, C_out, H/s, W/s).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: nn.Module) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.dw = nn.Conv2d(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pw = nn.Conv2d(in_channels, out_channels, 1)
        self.act = act
        before, after = same_padding(2 * stride, 3, stride)  # same for every even size
        self.padding = (before, after, before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(F.pad(x, self.padding)))
        shortcut = F.max_pool2d(x, 2) if self.stride == 2 else x
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return self.act(y + shortcut)
