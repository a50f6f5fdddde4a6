"""Labelled photos of any shape and framing: a sample's faces mode (precropped, detect, auto) gives
the model's input crop, the same in eval and in the training caches; images left out are counted
by reason; a model is never scored on the split it was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from keyfer import ExpressionRecognizer, create_model
from keyfer.cli import main
from keyfer.data.crops import (
    NO_FACE,
    UNREADABLE,
    SampleLeftOut,
    face_pipeline,
    largest_face_crop,
    sample_crop,
)
from keyfer.data.labels import CLASSES, Sample, one_hot
from keyfer.data.samples import load_sample_image, pad_to_square
from keyfer.errors import KeyferError
from keyfer.evaluate import check_not_trained_on, evaluate
from keyfer.faces.pipeline import whole_image_located
from keyfer.io.images import read_image
from keyfer.models.info import ModelInfo
from keyfer.preprocessing import prepare_face, to_gray3
from keyfer.train.cache import load_crops
from keyfer.train.crops import build_crop_cache
from tests.conftest import EXAMPLE
from tests.dataset_fixtures import FACE_BOX

TIGHT_CENTRE, TIGHT_HALF = (225, 125), 30
"""A 60 px square of astronaut.png's face from brow to mouth: too tight for the detector."""
FERPLUS_FACE = Path(__file__).parent / "data/ferplus_fixture/data/FER2013Train/fer0000000.png"


def _uint8(crops: torch.Tensor) -> np.ndarray:
    """(3, 192, 192) RGB floats in [0, 1] sampled from uint8 pixels -> (192, 192, 3) uint8."""
    return crops.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    return path


def _sample(path: Path, faces: str, label: int = 1) -> Sample:
    return Sample(path, label, one_hot(label), faces=faces)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """PNG files: a non-square photo with two faces of different sizes, a non-square tight face
    crop, a tight face crop the detector misses, and a patch of sky without a face."""
    image, root = read_image(EXAMPLE), tmp_path_factory.mktemp("photos")
    small = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)
    two_faces = np.zeros((512, 768, 3), np.uint8)
    two_faces[:, 256:], two_faces[128:384, :256] = image, small
    x, y, w, h = FACE_BOX
    (cx, cy), half = TIGHT_CENTRE, TIGHT_HALF
    return {
        "two_faces": _save(root / "two_faces.png", two_faces),
        "face_crop": _save(root / "face_crop.png", image[y - 20 : y + h, x : x + w]),
        "tight": _save(root / "tight.png", image[cy - half : cy + half, cx - half : cx + half]),
        "sky": _save(root / "sky.png", image[:100, :100]),
    }


@pytest.fixture(scope="module")
def model():
    return create_model("keyfer-ferplus-fast").eval()


# --- precropped -------------------------------------------------------------------------------


def test_a_non_square_precropped_image_is_padded_to_a_square(photos) -> None:
    image = read_image(photos["face_crop"])
    assert image.shape == (134, 114, 3)
    crop = sample_crop(_sample(photos["face_crop"], "precropped"), "gray3", 0.2, "edge")
    np.testing.assert_array_equal(crop, prepare_face(pad_to_square(image), "gray3", 0.2, "edge"))
    assert crop.shape == (192, 192, 3)


@pytest.mark.parametrize("color_mode", ["gray3", "rgb"])
def test_a_square_precropped_image_gives_the_crop_it_gave_before(color_mode) -> None:
    """Square pre-cropped faces (FERPlus) get exactly the crop of load + prepare_face."""
    sample = _sample(FERPLUS_FACE, "precropped")
    before = prepare_face(load_sample_image(sample), color_mode, 0.2, "edge")
    np.testing.assert_array_equal(sample_crop(sample, color_mode, 0.2, "edge"), before)


# --- detect and auto --------------------------------------------------------------------------


def test_detect_gives_the_largest_faces_crop_as_predict_sees_it(photos) -> None:
    image = read_image(photos["two_faces"])
    faces, _ = ExpressionRecognizer("keyfer-ferplus-fast", device="cpu").analyze(image)
    assert len(faces) == 2
    areas = (faces.boxes[:, 2:] - faces.boxes[:, :2]).prod(dim=1)
    largest, other = _uint8(faces.crops[areas.argmax()]), _uint8(faces.crops[areas.argmin()])
    sample = _sample(photos["two_faces"], "detect")
    np.testing.assert_array_equal(sample_crop(sample, "rgb", 0.2, "edge"), largest)
    np.testing.assert_array_equal(sample_crop(sample, "gray3", 0.2, "edge"), to_gray3(largest))
    assert not np.array_equal(largest, other)


def test_auto_takes_a_tight_crop_the_detector_misses_as_a_whole_face(photos) -> None:
    image = read_image(photos["tight"])
    assert len(face_pipeline(False)(image)) == 0  # the detector misses it
    expected = _uint8(whole_image_located(image).crops[0])
    crop = sample_crop(_sample(photos["tight"], "auto"), "rgb", 0.2, "edge")
    np.testing.assert_array_equal(crop, expected)
    with pytest.raises(SampleLeftOut, match="no face found") as left:
        sample_crop(_sample(photos["tight"], "detect"), "rgb", 0.2, "edge")
    assert left.value.reason == NO_FACE


def test_auto_detects_first(photos) -> None:
    sample = _sample(photos["two_faces"], "auto")
    expected = largest_face_crop(read_image(photos["two_faces"]), fallback=False)
    assert expected is not None
    np.testing.assert_array_equal(sample_crop(sample, "rgb", 0.2, "edge"), expected)


@pytest.mark.parametrize("faces", ["auto", "detect", "precropped"])
def test_an_unreadable_image_is_left_out_as_unreadable(tmp_path, faces) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(EXAMPLE.read_bytes()[:500])
    with pytest.raises(SampleLeftOut, match="broken.png") as left:
        sample_crop(_sample(broken, faces), "gray3", 0.2, "edge")
    assert left.value.reason == UNREADABLE


# --- eval -------------------------------------------------------------------------------------


def test_eval_counts_images_left_out_by_reason(model, photos, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    samples = [_sample(photos[name], "auto") for name in ("two_faces", "tight", "sky")]
    report = evaluate(model, [*samples, _sample(broken, "auto")])
    assert report["n"] == 2 and report["images"] == 4
    assert report["left_out"] == {"unreadable": 1, "no_face": 1} and report["unreadable"] == 1


def test_eval_scores_a_non_square_pre_cropped_face(model, photos) -> None:
    report = evaluate(model, [_sample(photos["face_crop"], "precropped")])
    assert report["n"] == 1 and report["left_out"] == {"unreadable": 0, "no_face": 0}


def test_an_all_failed_eval_names_the_most_common_reason(model, photos, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    samples = [_sample(photos["sky"], "auto"), _sample(photos["sky"], "detect")]
    expected = f"could be scored: 2 no face \\(e.g. {photos['sky']}\\); also 1 unreadable$"
    with pytest.raises(KeyferError, match=expected):
        evaluate(model, [*samples, _sample(broken, "auto")])


def test_keyfer_eval_scores_a_folder_of_any_photos(photos, tmp_path) -> None:
    """A non-square photo, a tight crop and an image without a face, with no option given."""
    root = tmp_path / "photos"
    for folder, name in (("happy", "two_faces"), ("Neutral", "tight"), ("happy", "sky")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / photos[name].name).write_bytes(photos[name].read_bytes())
    out = tmp_path / "report.json"
    args = ["eval", "--model", "keyfer-ferplus-fast", "--dataset", "folder", "--root", str(root),
            "--device", "cpu", "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n"] == 2 and report["left_out"] == {"unreadable": 0, "no_face": 1}
    assert "scored 2 of 3 images; left out: 1 no face\n" in result.output


def test_keyfer_eval_of_a_folder_without_faces_says_why(photos, tmp_path) -> None:
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "sky.png").write_bytes(photos["sky"].read_bytes())
    args = ["eval", "--model", "keyfer-ferplus-fast", "--dataset", "folder",
            "--root", str(tmp_path), "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines() == [
        "Error: no image of the dataset could be scored: 1 no face "
        f"(e.g. {tmp_path / 'happy' / 'sky.png'})"
    ]
    precropped = CliRunner().invoke(main, [*args, "--faces", "precropped"])
    assert precropped.exit_code == 0 and "scored 1 of 1 images\n" in precropped.output


# --- the training caches ----------------------------------------------------------------------


def test_the_training_caches_hold_the_eval_crops_and_count_reasons(photos, tmp_path) -> None:
    samples = [_sample(photos[name], "auto") for name in ("two_faces", "sky", "tight")]
    cache = build_crop_cache(samples, tmp_path / "crops", "gray3", 0.2, "edge")
    assert cache.readable.tolist() == [True, False, True]
    assert cache.meta["left_out"] == {"unreadable": 0, "no_face": 1}
    assert "no face found" in cache.meta["errors"]["1"]
    expected = [sample_crop(samples[i], "gray3", 0.2, "edge") for i in (0, 2)]
    np.testing.assert_array_equal(cache.read([0, 2]), np.stack(expected))
    crops, left_out = load_crops(samples, "gray3", 0.2, "edge")
    assert list(left_out) == [1] and left_out[1].reason == NO_FACE
    assert torch.equal(crops[0], torch.from_numpy(expected[0]).permute(2, 0, 1).float() / 255)


# --- the training split -----------------------------------------------------------------------


def test_a_model_is_never_scored_on_what_it_was_trained_on() -> None:
    info = ModelInfo("m", CLASSES, 1.0, "gray3", 0.2, "edge", trained_on=(("ferplus", "train"),))
    for split in ("train", "all"):
        with pytest.raises(KeyferError, match=f"m was trained on ferplus train: .*ferplus/{split}"):
            check_not_trained_on(info, "ferplus", split)
    check_not_trained_on(info, "ferplus", "valid")
    check_not_trained_on(info, "rafdb", "train")
    check_not_trained_on(info, "folder", "all")
