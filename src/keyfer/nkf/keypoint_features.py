"""Keypoint Features: bilinear samples of FaceMesh taps at landmark coordinates.

Coordinates are crop pixels in [0, 192), a pixel's centre at integer + 0.5. A tap of stride s has
192/s cells per side, so crop x maps to feature coordinate x / s, which is exactly
``grid_sample(..., align_corners=False)`` with x_norm = 2 x / 192 - 1 for every stride.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from keyfer.faces.facemesh import CROP_SIZE, TAP_CHANNELS


def keypoint_feature_channels(strides: Sequence[int]) -> int:
    """Total channels C of the Keypoint Features of these taps (e.g. 352 for 4, 8, 16, 32)."""
    return sum(TAP_CHANNELS[s] for s in strides)


def sample_keypoint_features(
    taps: dict[int, torch.Tensor], keypoints: torch.Tensor, strides: Sequence[int]
) -> torch.Tensor:
    """Sample each tap at (B, K, 2) crop-pixel keypoints -> (B, K, C) features, taps concatenated
    in ``strides`` order. Differentiable in both the taps and the keypoints; points outside the
    crop take the nearest border value."""
    if torch.compiler.is_exporting():
        features = [_gather_bilinear(taps[s], keypoints / s - 0.5) for s in strides]
        return torch.cat(features, dim=2)
    grid = (2 * keypoints / CROP_SIZE - 1).unsqueeze(2).to(taps[strides[0]].dtype)  # (B, K, 1, 2)
    features = [
        F.grid_sample(taps[s], grid, mode="bilinear", padding_mode="border", align_corners=False)
        for s in strides
    ]
    return torch.cat(features, dim=1).squeeze(-1).transpose(1, 2)


def _gather_bilinear(tap: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` (bilinear, border) of a (B, C, H, W) tap at (B, K, 2) cell coordinates
    (cell centres at integers) -> (B, K, C), as row gathers from the (B*H*W, C) map: for export,
    where onnxruntime's GridSample took about 15% of the fast crop network's time
    (``benchmarks/onnx_export_forms.py``)."""
    batch, channels, height, width = tap.shape
    rows = tap.permute(0, 2, 3, 1).reshape(-1, channels)
    x = cells[..., 0].clamp(0, width - 1)
    y = cells[..., 1].clamp(0, height - 1)
    x0, y0 = x.floor(), y.floor()
    wx, wy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    first_row = (torch.arange(batch, device=tap.device) * (height * width)).unsqueeze(1)

    def at(row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        return rows[(first_row + row * width + column).flatten()].view(batch, -1, channels)

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy
