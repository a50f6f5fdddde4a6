"""Building blocks shared by the BlazeFace and FaceMesh ports.

Both MediaPipe networks were trained in TensorFlow with ``SAME`` padding, which pads
asymmetrically (more at the bottom/right) when the stride is 2. :class:`SameConv2d` reproduces
that without copying the input into a padded tensor, so the ported weights give the same
numbers as TFLite.
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


class SameConv2d(nn.Conv2d):
    """A square ``nn.Conv2d`` with TensorFlow ``SAME`` padding for inputs of size ``size``.

    Symmetric padding is the conv's own. Asymmetric padding (one more after than before) is
    done by growing the kernel with a leading zero row and column and padding symmetrically by
    ``after``: the same sums, with no padded copy of the input. Weights keep their usual shape.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        size: int,
        groups: int = 1,
    ) -> None:
        before, after = same_padding(size, kernel_size, stride)
        if after - before not in (0, 1):
            raise ValueError(f"unsupported SAME padding ({before}, {after})")
        super().__init__(in_channels, out_channels, kernel_size, stride, after, groups=groups)
        self.grow = after - before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.pad(self.weight, (self.grow, 0, self.grow, 0)) if self.grow else self.weight
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, groups=self.groups)


class ResidualBlock(nn.Module):
    """Depthwise 3x3 (stride 1 or 2) -> pointwise 1x1, plus a shortcut, then an activation.

    With stride 2 the shortcut is a 2x2 max-pool; when the block widens the channels, the
    shortcut is added to the first ``in_channels`` channels only (MediaPipe's zero
    ``channel_padding``).

    Input (B, C_in, H, W), H and W even when ``stride == 2``; output (B, C_out, H/s, W/s).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: nn.Module) -> None:
        super().__init__()
        self.stride = stride
        # SAME padding of a 3x3 kernel depends only on the stride for even sizes.
        self.dw = SameConv2d(in_channels, in_channels, 3, stride, 2 * stride, groups=in_channels)
        self.pw = nn.Conv2d(in_channels, out_channels, 1)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        shortcut = F.max_pool2d(x, 2) if self.stride == 2 else x
        if torch.compiler.is_exporting():  # see _widen
            return self.act(y + _widen(shortcut, y.shape[1]))
        # In place: the pointwise conv's output is not needed for its backward.
        y[:, : shortcut.shape[1]] += shortcut
        return self.act(y)


def _widen(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, channels, H, W), zeros after the first C channels, as a 1x1 conv:
    for export, where onnxruntime keeps a conv in its blocked layout and fuses the add after it,
    while a channel Pad (or the in-place slice add, a ScatterND) goes through layout reorders."""
    if channels == x.shape[1]:
        return x
    identity = torch.eye(channels, x.shape[1], dtype=x.dtype, device=x.device)
    return F.conv2d(x, identity[:, :, None, None])


class PReLU(nn.PReLU):
    """``nn.PReLU`` (per-channel slopes, the same state dict) that exports to ONNX as
    ``relu(x) + conv_{-a}(relu(conv_{-1}(x)))`` with depthwise 1x1 convs: onnxruntime runs those
    in its blocked conv layout, fusing the relu and the add, while its PRelu kernel needs layout
    reorders around it (``benchmarks/onnx_export_forms.py``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            channels = x.shape[1]
            negate = torch.full((channels, 1, 1, 1), -1.0, dtype=x.dtype, device=x.device)
            negative_part = F.relu(F.conv2d(x, negate, groups=channels))
            scale = -self.weight.view(channels, 1, 1, 1)
            return F.conv2d(negative_part, scale, groups=channels) + F.relu(x)
        return super().forward(x)
