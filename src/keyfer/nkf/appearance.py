"""The appearance branch: dlib's face-recognition ResNet on a face chip cut from the aligned crop,
its taps sampled at the same landmarks as the FaceMesh Keypoint Features.

Frames: crop pixels in [0, 192) and chip pixels in [0, 150), a pixel's centre at integer + 0.5.
The chip is dlib's: the least-squares similarity that puts 33 iBUG-68 points (nose, eyes, upper
lip) of FaceMesh's landmarks on dlib's mean face with 0.25 padding (dlib's one-pixel shrink of
the chip grid is left out, under 1% of scale). Every step is a differentiable tensor function,
so the branch can be fine-tuned and the landmarks stay coordinates, as for FaceMesh's KFs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from keyfer.faces.dlib_align import ALIGNMENT_POINTS, chip_template
from keyfer.faces.dlib_resnet import CHIP_SIZE, TAPS, DlibResNet, tap_coordinates
from keyfer.faces.facemesh import CROP_SIZE
from keyfer.geometry import apply_affine, invert_affine

# 17x17 and 8x8 maps, 192 channels: adding the 4x4 level1 map (whose last row and column see only
# the shortcut) lost 1.4 points in the ablation (docs/results/ablation.md).
DEFAULT_TAPS = ("level3", "level2")
GLOBAL_TAP = "level0"
GLOBAL_CHANNELS = TAPS[GLOBAL_TAP].channels  # the pooled map that dlib's 128-d projection reads


def appearance_channels(taps: Sequence[str]) -> int:
    """Channels of the appearance Keypoint Features of these taps (e.g. 448 for level3..level1)."""
    return sum(TAPS[name].channels for name in taps)


def fit_crop_to_chip(landmarks68: torch.Tensor) -> torch.Tensor:
    """(B, 68, 2) iBUG-68 points in crop pixels -> (B, 2, 3) similarity crop -> chip, the least
    squares fit of their :data:`ALIGNMENT_POINTS` onto dlib's template (no reflection).

    The same objective as :func:`keyfer.faces.dlib_align.chip_transform`, solved differently on
    purpose: a closed-form batched tensor solve for ``[[a, -b], [b, a]]`` (no SVD, so it is
    differentiable and exports to ONNX), in keyfer's frame, without dlib's one-pixel shrink of the
    chip grid; that one reproduces dlib's chip exactly from a whole image, for one face."""
    source = landmarks68[:, list(ALIGNMENT_POINTS)].float()
    target = torch.as_tensor(chip_template(), dtype=torch.float32, device=source.device)
    source_mean, target_mean = source.mean(1, keepdim=True), target.mean(0)
    s, t = source - source_mean, target - target_mean
    energy = (s**2).sum((1, 2))
    a = (s[..., 0] * t[..., 0] + s[..., 1] * t[..., 1]).sum(1) / energy
    b = (s[..., 0] * t[..., 1] - s[..., 1] * t[..., 0]).sum(1) / energy
    linear = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (B, 2, 2)
    shift = target_mean - (linear @ source_mean.transpose(1, 2)).squeeze(-1)
    return torch.cat([linear, shift.unsqueeze(-1)], -1).to(landmarks68.dtype)


def extract_chips(crops: torch.Tensor, crop_to_chip: torch.Tensor) -> torch.Tensor:
    """(B, 3, 192, 192) crops in [0, 1] -> (B, 3, 150, 150) chips in [0, 255] (dlib's input
    range), bilinear, black outside the crop."""
    centres = torch.arange(CHIP_SIZE, dtype=crops.dtype, device=crops.device) + 0.5
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    chip_points = torch.stack([x, y], -1).reshape(1, -1, 2)  # broadcast over the batch
    crop_points = apply_affine(invert_affine(crop_to_chip).to(crops.dtype), chip_points)
    grid = (2 * crop_points / CROP_SIZE - 1).view(-1, CHIP_SIZE, CHIP_SIZE, 2)
    chips = F.grid_sample(crops, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return chips * 255.0


def sample_chip_features(
    taps: dict[str, torch.Tensor], chip_points: torch.Tensor, names: Sequence[str]
) -> torch.Tensor:
    """Sample dlib taps at (B, K, 2) chip-pixel points -> (B, K, C), taps concatenated in
    ``names`` order; points beyond a map take its border value."""
    features = []
    for name in names:
        cells = tap_coordinates(chip_points, name)  # cell i spans [i, i + 1)
        grid = (2 * cells / TAPS[name].size - 1).unsqueeze(2).to(taps[name].dtype)
        features.append(
            F.grid_sample(taps[name], grid, "bilinear", padding_mode="border", align_corners=False)
        )
    return torch.cat(features, dim=1).squeeze(-1).transpose(1, 2)


class AppearanceFeatures(NamedTuple):
    """``keypoint_features`` (B, K, C) from the chosen taps, ``global_feature`` (B, 256) the
    pooled last map, ``taps`` {name: map}, ``crop_to_chip`` (B, 2, 3)."""

    keypoint_features: torch.Tensor
    global_feature: torch.Tensor
    taps: dict[str, torch.Tensor]
    crop_to_chip: torch.Tensor


class AppearanceBranch(nn.Module):
    """dlib's ResNet on chips cut from the aligned crops, sampled at the keypoints."""

    def __init__(self, taps: Sequence[str], frozen: bool = True) -> None:
        super().__init__()
        self.taps = list(taps)
        self.network = DlibResNet.from_pretrained(frozen=frozen)

    def forward(
        self, crops: torch.Tensor, landmarks68: torch.Tensor, keypoints: torch.Tensor
    ) -> AppearanceFeatures:
        """(B, 3, 192, 192) crops in [0, 1], their (B, 68, 2) iBUG-68 landmarks and (B, K, 2)
        keypoints, both in crop pixels."""
        crop_to_chip = fit_crop_to_chip(landmarks68)
        out = self.network(extract_chips(crops, crop_to_chip), taps={*self.taps, GLOBAL_TAP})
        chip_points = apply_affine(crop_to_chip, keypoints)
        return AppearanceFeatures(
            sample_chip_features(out.taps, chip_points, self.taps),
            out.taps[GLOBAL_TAP].mean(dim=(2, 3)),
            out.taps,
            crop_to_chip,
        )

    def sample(self, features: AppearanceFeatures, keypoints: torch.Tensor) -> torch.Tensor:
        """Appearance Keypoint Features (B, K, C) re-sampled at other (B, K, 2) crop keypoints
        (e.g. perturbed landmarks), without running the network again."""
        chip_points = apply_affine(features.crop_to_chip, keypoints)
        return sample_chip_features(features.taps, chip_points, self.taps)
