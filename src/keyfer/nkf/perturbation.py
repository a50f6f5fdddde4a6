"""KF regularization: landmark perturbation scaled by the inter-ocular distance (docs/method.md,
'KF regularization')."""

from __future__ import annotations

import torch

from keyfer.faces.facemesh import CROP_SIZE


def perturb_keypoints(
    keypoints: torch.Tensor,
    iod: torch.Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """L~ = L + e with e ~ N(0, (sigma * IOD)^2) per coordinate, clamped to the crop.

    ``keypoints`` (B, K, 2) crop pixels, ``iod`` (B,) in the same pixels; returns (B, K, 2).
    The noise is drawn on the CPU (``generator`` is a CPU generator) and moved to the keypoints,
    unless ``noise`` gives the (B, K, 2) standard-normal draws to scale instead.
    """
    if noise is None:
        noise = torch.randn(keypoints.shape, generator=generator)
    perturbed = keypoints + noise.to(keypoints) * (sigma * iod)[:, None, None]
    return perturbed.clamp(0.0, CROP_SIZE - 1e-3)
