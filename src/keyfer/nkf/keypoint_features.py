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
    grid = (2 * keypoints / CROP_SIZE - 1).unsqueeze(2).to(taps[strides[0]].dtype)  # (B, K, 1, 2)
    features = [
        F.grid_sample(taps[s], grid, mode="bilinear", padding_mode="border", align_corners=False)
        for s in strides
    ]
    return torch.cat(features, dim=1).squeeze(-1).transpose(1, 2)
