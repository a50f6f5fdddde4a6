"""The appearance branch: the crop -> chip mapping of images and landmarks, and its features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from keyfer.faces.dlib_align import chip_transform, extract_chip
from keyfer.faces.dlib_resnet import CHIP_SIZE, TAPS
from keyfer.faces.facemesh import CROP_SIZE
from keyfer.geometry import apply_affine, invert_affine
from keyfer.nkf.appearance import (
    AppearanceBranch,
    extract_chips,
    fit_crop_to_chip,
    sample_chip_features,
)


def _landmarks(batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Plausible (B, 68, 2) crop landmarks: dlib's template placed in the crop, then moved."""
    from keyfer.faces.dlib_align import ALIGNMENT_POINTS, chip_template

    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(batch, 68, 2, generator=generator) * 100 + 46
    template = torch.as_tensor(chip_template(), dtype=torch.float32)
    angle = torch.tensor(0.2)
    rotation = torch.stack(
        [torch.cos(angle), -torch.sin(angle), torch.sin(angle), torch.cos(angle)]
    )
    placed = (template - 75) @ (1.1 * rotation.view(2, 2)).T + torch.tensor([96.0, 100.0])
    points[:, list(ALIGNMENT_POINTS)] = placed
    return points


def test_the_fit_recovers_a_known_similarity():
    landmarks = _landmarks()
    crop_to_chip = fit_crop_to_chip(landmarks)
    from keyfer.faces.dlib_align import ALIGNMENT_POINTS, chip_template

    mapped = apply_affine(crop_to_chip, landmarks[:, list(ALIGNMENT_POINTS)])
    template = torch.as_tensor(chip_template(), dtype=torch.float32)
    assert torch.allclose(mapped, template.expand_as(mapped), atol=1e-3)
    back = apply_affine(invert_affine(crop_to_chip), mapped)
    assert torch.allclose(back, landmarks[:, list(ALIGNMENT_POINTS)], atol=1e-3)


def test_a_keypoint_lands_where_its_pixel_goes():
    crops = torch.zeros(1, 3, CROP_SIZE, CROP_SIZE)
    crops[0, :, 100, 90] = 1.0  # pixel centre (90.5, 100.5)
    landmarks = _landmarks(1)
    crop_to_chip = fit_crop_to_chip(landmarks)
    chips = extract_chips(crops, crop_to_chip)
    point = apply_affine(crop_to_chip, torch.tensor([[[90.5, 100.5]]]))[0, 0]
    brightest = torch.nonzero(chips[0, 0] == chips[0, 0].max())[0]
    assert abs(brightest[1] + 0.5 - point[0]) <= 1 and abs(brightest[0] + 0.5 - point[1]) <= 1


def test_chips_match_the_dlib_alignment_on_the_crop():
    rng = np.random.default_rng(0)
    image = (rng.random((CROP_SIZE, CROP_SIZE, 3)) * 255).astype(np.uint8)
    image = np.ascontiguousarray(np.repeat(np.repeat(image[::8, ::8], 8, 0), 8, 1))  # smooth
    landmarks = _landmarks(1)
    reference = extract_chip(image, chip_transform(landmarks[0].numpy()))
    crops = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    ours = extract_chips(crops, fit_crop_to_chip(landmarks))[0].permute(1, 2, 0).numpy()
    inner = slice(10, CHIP_SIZE - 10)  # dlib's one-pixel grid shrink moves the edges most
    assert np.median(np.abs(ours[inner, inner] - reference[inner, inner])) < 4


def test_features_are_sampled_at_the_mapped_cells():
    taps = {"level2": torch.arange(64.0).view(1, 1, 8, 8).expand(1, 2, 8, 8).clone()}
    stride = TAPS["level2"].stride
    cell_centre = torch.tensor([[[3.5 * stride + 3.5, 5.5 * stride + 3.5]]])  # cell (x=3, y=5)
    features = sample_chip_features(taps, cell_centre, ["level2"])
    assert features.shape == (1, 1, 2) and features[0, 0, 0].item() == pytest.approx(5 * 8 + 3)


def test_branch_outputs_have_the_documented_shapes():
    branch = AppearanceBranch(["level3", "level2"])
    crops = torch.rand(2, 3, CROP_SIZE, CROP_SIZE)
    landmarks = _landmarks(2)
    out = branch(crops, landmarks, landmarks[:, :5])
    assert out.keypoint_features.shape == (2, 5, 64 + 128)
    assert out.global_feature.shape == (2, 256)
    assert torch.isfinite(out.keypoint_features).all()
