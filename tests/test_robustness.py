"""Robustness curves: IOD-scaled landmark noise, seeded occlusion, and the `keyfer eval` options."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from keyfer.cli import main
from keyfer.errors import KeyferError
from keyfer.nkf.config import ModelConfig
from keyfer.nkf.model import NKFModel
from keyfer.nkf.perturbation import perturb_keypoints
from keyfer.robustness import (
    FILLS,
    MASK_MARGIN,
    Occlusion,
    RobustnessSpec,
    occlude,
    occlusion_boxes,
    parse_landmark_noise,
    parse_occlusions,
    patch_positions,
    robustness_logits,
    unit_noise,
)
from tests.conftest import ROOT

FIXTURE = ROOT / "tests/data/ferplus_fixture"


@pytest.fixture(scope="module")
def model() -> NKFModel:
    torch.manual_seed(0)
    return NKFModel(ModelConfig(dim=8, hidden=16)).eval()


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return torch.rand(3, 3, 192, 192, generator=torch.Generator().manual_seed(1))


def _face(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic (B, 68, 2) iBUG-68 landmarks (eyes around y 75, mouth around y 138) and IOD."""
    generator = torch.Generator().manual_seed(2)
    points = 50 + torch.rand(batch, 68, 2, generator=generator) * 90
    points[:, 36:48, 0] = 60 + torch.rand(batch, 12, generator=generator) * 70
    points[:, 36:48, 1] = 70 + torch.rand(batch, 12, generator=generator) * 10
    points[:, 48:68, 0] = 75 + torch.rand(batch, 20, generator=generator) * 40
    points[:, 48:68, 1] = 130 + torch.rand(batch, 20, generator=generator) * 15
    points[:, 17:36, 1] = points[:, 17:36, 1].clamp(85, 125)  # brows and nose between them
    points[:, 36, 0], points[:, 45, 0] = 60.0, 130.0  # outer eye corners
    return points, (points[:, 36] - points[:, 45]).norm(dim=-1)


def test_noise_scale_follows_the_iod():
    keypoints = torch.full((2, 68, 2), 96.0)
    iod = torch.tensor([20.0, 60.0])
    noise = unit_noise([0, 1], 68, seed=0)
    moved = perturb_keypoints(keypoints, iod, 0.05, noise=noise)
    assert torch.allclose(moved - keypoints, noise * 0.05 * iod[:, None, None], atol=1e-4)
    spread = (moved - keypoints).std(dim=(1, 2))
    assert spread[1] / spread[0] == pytest.approx(3.0, rel=0.3)


def test_sigma_zero_reproduces_the_clean_logits_exactly(model, crops):
    spec = RobustnessSpec(landmark_noise=(0.0, 0.05))
    clean, sigma0, sigma5 = robustness_logits(model, crops, [0, 1, 2], spec)
    with torch.inference_mode():
        reference = model(crops).logits
    assert torch.equal(clean, reference) and torch.equal(sigma0, reference)
    assert not torch.allclose(sigma5, reference)
    mirrored = robustness_logits(model, crops, [0, 1, 2], spec, tta_flip=True)
    with torch.inference_mode():
        averaged = (reference + model(crops.flip(-1)).logits) / 2
    assert torch.equal(mirrored[0], averaged) and torch.equal(mirrored[1], averaged)


def test_classify_at_the_own_keypoints_matches_forward(model, crops):
    with torch.inference_mode():
        features = model.features(crops)
        resampled = model.classify(features, features.keypoints).logits
        assert torch.allclose(resampled, model(crops).logits, atol=1e-5)


def test_draws_are_seeded_per_image(model, crops):
    assert torch.equal(unit_noise([3, 4], 68, 0)[1], unit_noise([4], 68, 0)[0])
    assert not torch.equal(unit_noise([4], 68, 0), unit_noise([4], 68, 1))
    assert not torch.equal(unit_noise([4], 68, 0, view=0), unit_noise([4], 68, 0, view=1))
    assert torch.equal(patch_positions([7, 2], 5)[0], patch_positions([7], 5)[0])
    spec = RobustnessSpec((0.1,), (Occlusion("random", 0.3),), seed=3)
    first = robustness_logits(model, crops, [0, 1, 2], spec)
    again = robustness_logits(model, crops, [0, 1, 2], spec)
    other = robustness_logits(model, crops, [0, 1, 2], RobustnessSpec((0.1,), seed=4))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize(("kind", "other"), [("eyes", "mouth"), ("mouth", "eyes")])
def test_eye_and_mouth_masks_cover_their_landmarks_only(kind, other):
    landmarks, iod = _face()
    regions = {"eyes": slice(36, 48), "mouth": slice(48, 68)}
    boxes = occlusion_boxes(Occlusion(kind), landmarks, iod, torch.zeros(2, 2))
    occluded = occlude(torch.ones(2, 3, 192, 192), boxes, FILLS["black"])
    for image, points, box, distance in zip(occluded, landmarks, boxes, iod, strict=True):
        inside = points[regions[kind]].floor().long()
        assert (image[:, inside[:, 1], inside[:, 0]] == 0).all()
        outside = points[regions[other]].floor().long()
        assert (image[:, outside[:, 1], outside[:, 0]] == 1).all()
        width = points[regions[kind], 0].max() - points[regions[kind], 0].min()
        assert box[2] - box[0] == pytest.approx(width + 2 * MASK_MARGIN * distance, abs=1.5)


def test_random_patches_are_squares_on_the_face_inside_the_crop():
    landmarks, iod = _face(batch=50)
    positions = patch_positions(range(50), seed=0)
    boxes = occlusion_boxes(Occlusion("random", 0.25), landmarks, iod, positions)
    assert ((boxes[:, 2] - boxes[:, 0]) == 48).all() and ((boxes[:, 3] - boxes[:, 1]) == 48).all()
    assert (boxes >= 0).all() and (boxes <= 192).all()
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert (centres >= landmarks.amin(1) - 1).all() and (centres <= landmarks.amax(1) + 1).all()
    occluded = occlude(torch.full((50, 3, 192, 192), 0.9), boxes, FILLS["gray"])
    assert ((occluded == FILLS["gray"]).sum(dim=(1, 2, 3)) == 3 * 48 * 48).all()


def test_option_parsing_and_bad_values():
    assert parse_landmark_noise("0, 0.02,0.05,0.1") == (0.0, 0.02, 0.05, 0.1)
    assert parse_occlusions("0.1,eyes,mouth") == (
        Occlusion("random", 0.1),
        Occlusion("eyes"),
        Occlusion("mouth"),
    )
    for bad in ("abc", "-0.1", "nan", "0,,0.1", ""):
        with pytest.raises(KeyferError, match="landmark noise"):
            parse_landmark_noise(bad)
    for bad in ("nose", "0", "1.5"):
        with pytest.raises(KeyferError, match="occlusion"):
            parse_occlusions(bad)
    with pytest.raises(KeyferError, match="fill"):
        RobustnessSpec(fill="white")


def _folder(tmp_path):
    images = sorted((FIXTURE / "data/FER2013Train").glob("*.png"))
    for name, image in zip(["happy", "Angry", "happy"], images, strict=False):
        (tmp_path / "faces" / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, tmp_path / "faces" / name / image.name)
    return tmp_path / "faces"


def test_eval_cli_reports_prints_and_plots_robustness(tmp_path):
    root = _folder(tmp_path)
    args = ["eval", "--dataset", "folder", "--root", str(root), "--landmark-noise", "0,0.05",
            "--occlusion", "0.2,eyes", "--plots", str(tmp_path / "plots"),
            "--faces", "precropped"]  # fmt: skip
    reports = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        result = CliRunner().invoke(main, [*args, "--json", str(out)])
        assert result.exit_code == 0, result.output
        reports.append(json.loads(out.read_text()))
    report = reports[0]
    assert reports[1] == report
    assert "sigma 0.05" in result.output and "eyes" in result.output
    assert [e["sigma"] for e in report["landmark_noise"]] == [0.0, 0.05]
    assert report["landmark_noise"][0]["accuracy"] == report["accuracy"]
    assert report["landmark_noise"][0]["mean_class_accuracy"] == report["mean_class_accuracy"]
    assert [(e["kind"], e["size"]) for e in report["occlusion"]] == [
        ("random", 0.2),
        ("eyes", None),
    ]
    assert all(0 <= e["accuracy"] <= 1 for e in report["occlusion"])
    assert report["restricted_to"] == ["happiness", "anger"]
    assert (tmp_path / "plots/folder_all_landmark_noise.png").is_file()
    assert (tmp_path / "plots/folder_all_occlusion.png").is_file()


@pytest.mark.parametrize(
    ("option", "value"), [("--landmark-noise", "abc"), ("--landmark-noise", "-0.1"),
                          ("--occlusion", "nose")]
)  # fmt: skip
def test_bad_robustness_options_are_one_line_usage_errors(tmp_path, option, value):
    args = ["eval", "--dataset", "folder", "--root", str(tmp_path), option, value]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and option in errors[0] and "Traceback" not in result.output
