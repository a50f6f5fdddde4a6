"""The dataset adapters on tiny fixtures in the official formats, the registry, the one sample
loader and the class-balanced weights."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from keyfer.data.affectnet import COLUMNS
from keyfer.data.crops import largest_face_crop, sample_crop
from keyfer.data.datasets import DATASETS, load_split, training_splits
from keyfer.data.fer2013 import parse_pixels
from keyfer.data.labels import BASIC_CLASSES, CLASSES, Sample, one_hot
from keyfer.data.samples import crop_face_box, load_sample_image, pad_to_square
from keyfer.data.sampling import class_balanced_weights
from keyfer.errors import ImageReadError, KeyferError
from keyfer.io.images import read_image
from keyfer.models.checkpoint import TRAIN_SPLIT
from tests.dataset_fixtures import (
    AFFECTNET_HEADER,
    FACE_BOX,
    make_affectnet,
    make_fer2013_csv,
    make_fer2013_folders,
    make_rafdb,
)


def names(split) -> list[tuple[str, str]]:
    return [(s.path.name, CLASSES[s.label]) for s in split.samples]


# --- the registry -----------------------------------------------------------------------------


def test_registry_names_and_training_splits() -> None:
    assert list(DATASETS) == [
        "ferplus", "fer2013", "rafdb", "affectnet", "affectnet7", "sfew", "tfeid", "muxspace",
        "folder",
    ]  # fmt: skip
    assert training_splits("ferplus") == ("train", "valid")
    assert training_splits("rafdb") == ("train", "test")
    assert training_splits("affectnet7") == ("train", "validation")
    assert training_splits("fer2013") == ("train", "publictest")
    with pytest.raises(KeyferError, match="cannot train on 'folder'"):
        training_splits("folder")


def test_every_dataset_trains_on_the_split_checkpoints_assume() -> None:
    """A checkpoint's experiment names no split: it trained on :data:`TRAIN_SPLIT`, which must
    stay every dataset's train split (else the checkpoint has to record its split)."""
    trained = {name: spec.train_split for name, spec in DATASETS.items() if spec.train_split}
    assert trained and set(trained.values()) == {TRAIN_SPLIT}


def test_load_split_errors_are_actionable(tmp_path: Path) -> None:
    with pytest.raises(KeyferError, match="unknown dataset 'raf'; choose from ferplus, fer2013"):
        load_split("raf", tmp_path, "test")
    with pytest.raises(KeyferError, match="rafdb has no split 'valid'; choose --split from train"):
        load_split("rafdb", tmp_path, "valid")
    with pytest.raises(KeyferError, match="has no split None"):
        load_split("affectnet", tmp_path, None)
    with pytest.raises(KeyferError, match="the rafdb root .* is not a folder"):
        load_split("rafdb", tmp_path / "absent", "test")
    with pytest.raises(KeyferError, match="unknown label mode"):
        load_split("rafdb", tmp_path, "test", "soft")


# --- RAF-DB -----------------------------------------------------------------------------------


def test_rafdb_maps_one_based_labels_and_splits_by_prefix(tmp_path: Path, caplog) -> None:
    root = make_rafdb(tmp_path / "rafdb")
    with caplog.at_level(logging.WARNING):
        test = load_split("rafdb", root, "test")
    assert names(test) == [("test_0001_aligned.jpg", "happiness"),
                           ("test_0002_aligned.jpg", "surprise")]  # fmt: skip
    assert test.classes == list(BASIC_CLASSES) and "contempt" not in test.classes
    assert test.skipped == {"missing_image": 1, "bad_label": 1, "malformed_row": 1}
    assert "3 bad rows skipped" in caplog.text and "line 7: label '9'" in caplog.text
    train = load_split("rafdb", root, "train")
    assert names(train) == [("train_00001_aligned.jpg", "happiness"),
                            ("train_00002_aligned.jpg", "neutral")]  # fmt: skip
    assert train.skipped == {"bad_label": 1, "malformed_row": 1}
    image = load_sample_image(train.samples[0])
    assert image.shape == (100, 100, 3) and image.dtype == np.uint8


def test_rafdb_original_images_need_face_detection(tmp_path: Path) -> None:
    """Without aligned faces, the originals' faces are detected: the largest one's aligned crop."""
    root = make_rafdb(tmp_path / "rafdb", original=True)
    test = load_split("rafdb", root, "test")
    assert [s.path.name for s in test.samples] == ["test_0001.jpg", "test_0002.jpg"]
    assert all(s.faces == "detect" for s in test.samples)
    crop = sample_crop(test.samples[0], "rgb", 0.2, "edge")
    expected = largest_face_crop(read_image(test.samples[0].path), fallback=False)
    assert expected is not None
    np.testing.assert_array_equal(crop, expected)


def test_rafdb_missing_files_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyferError, match="holding EmoLabel/ and Image/"):
        load_split("rafdb", tmp_path, "test")
    root = make_rafdb(tmp_path / "rafdb")
    shutil.rmtree(root / "Image")
    with pytest.raises(KeyferError, match="no RAF-DB images"):
        load_split("rafdb", root, "test")


# --- AffectNet --------------------------------------------------------------------------------


def test_affectnet_eight_and_seven_classes(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path / "affectnet")
    eight = load_split("affectnet", root, "validation")
    assert names(eight) == [("face.jpg", "happiness"), ("mirror.jpg", "neutral"),
                            ("face.jpg", "contempt")]  # fmt: skip
    assert eight.classes == list(CLASSES)
    assert eight.skipped == {"missing_image": 1, "bad_label": 1, "bad_box": 1}
    assert eight.excluded == {"none": 1, "not_face": 1}
    seven = load_split("affectnet7", root, "train")
    assert names(seven) == [("face.jpg", "happiness"), ("mirror.jpg", "neutral")]
    assert seven.classes == list(BASIC_CLASSES)
    assert seven.excluded == {"none": 1, "not_face": 1, "contempt": 1}
    assert seven.samples[0].box == tuple(v / 2 for v in FACE_BOX)


def test_affectnet_box_crop_is_the_ferplus_like_face(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path / "affectnet")
    fer = make_fer2013_csv(tmp_path / "fer2013")
    boxed = load_sample_image(load_split("affectnet", root, "train").samples[0])
    face48 = load_sample_image(load_split("fer2013", fer, "train").samples[0])
    assert boxed.shape == (57, 57, 3)
    gray = cv2.resize(cv2.cvtColor(boxed, cv2.COLOR_RGB2GRAY), (48, 48), cv2.INTER_AREA)
    assert np.abs(gray.astype(int) - face48[..., 0]).mean() < 8  # the same face, same framing


def test_affectnet_lists_at_root_and_without_header(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path / "affectnet", lists_at_root=True)
    assert len(load_split("affectnet", root, "train").samples) == 3
    csv_path = root / "validation.csv"
    csv_path.write_text(csv_path.read_text().replace(AFFECTNET_HEADER + "\n", ""))
    assert AFFECTNET_HEADER.split(",") == list(COLUMNS)
    assert len(load_split("affectnet", root, "validation").samples) == 3


def test_affectnet_missing_files_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyferError, match="no AffectNet list training.csv"):
        load_split("affectnet", tmp_path, "train")
    root = make_affectnet(tmp_path / "affectnet")
    shutil.rmtree(root / "Manually_Annotated_Images")
    with pytest.raises(KeyferError, match="no AffectNet image folder"):
        load_split("affectnet", root, "train")


# --- FER2013 ----------------------------------------------------------------------------------


def test_fer2013_csv_splits_and_pixels(tmp_path: Path, caplog) -> None:
    root = make_fer2013_csv(tmp_path / "fer2013")
    with caplog.at_level(logging.WARNING):
        public = load_split("fer2013", root, "publictest")
    assert names(public) == [("fer2013.csv#4", "neutral"), ("fer2013.csv#5", "happiness")]
    assert public.skipped == {"bad_label": 1, "bad_pixels": 1, "malformed_row": 1}
    assert "unknown Usage 'Validation'" in caplog.text
    assert public.classes == list(BASIC_CLASSES)
    train = load_split("fer2013", root, "train")
    assert names(train) == [("fer2013.csv#2", "happiness"), ("fer2013.csv#3", "anger")]
    assert names(load_split("fer2013", root, "privatetest")) == [("fer2013.csv#8", "fear")]
    image = load_sample_image(train.samples[0])
    assert image.shape == (48, 48, 3)
    np.testing.assert_array_equal(image[..., 0], train.samples[0].pixels)
    with pytest.raises(KeyferError, match="no FER2013 test split"):
        load_split("fer2013", root, "test")


def test_parse_pixels_is_row_major_and_strict() -> None:
    values = np.arange(2304) % 256
    image = parse_pixels(" ".join(map(str, values)))
    assert image.dtype == np.uint8 and image[0, 1] == 1 and image[1, 0] == 48
    assert parse_pixels(" ".join(map(str, values[:-1]))) is None
    assert parse_pixels(" ".join(["256"] * 2304)) is None
    assert parse_pixels(" ".join(["x"] * 2304)) is None


def test_fer2013_class_folders(tmp_path: Path) -> None:
    root = make_fer2013_folders(tmp_path / "fer2013")
    test = load_split("fer2013", root, "test")
    assert names(test) == [("test_happy.png", "happiness"), ("test_neutral.png", "neutral")]
    assert test.classes == list(BASIC_CLASSES)
    with pytest.raises(KeyferError, match="no FER2013 publictest split"):
        load_split("fer2013", root, "publictest")


def test_ferplus_and_folder_through_the_registry(tmp_path: Path) -> None:
    fixture = Path(__file__).resolve().parent / "data" / "ferplus_fixture"
    ferplus = load_split("ferplus", fixture, "train", "probability")
    assert ferplus.classes == list(CLASSES) and len(ferplus.samples) == 3
    assert ferplus.skipped == {"missing_image": 1}
    assert ferplus.excluded == {"no_majority": 1, "not_face": 1, "unknown": 1}
    folder = load_split("folder", make_fer2013_folders(tmp_path / "f") / "test", None)
    assert folder.classes == ["neutral", "happiness"]


# --- the sample loader ------------------------------------------------------------------------


def test_crop_face_box_pads_with_edge_pixels() -> None:
    image = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    inside = crop_face_box(image, (2, 3, 4, 2))
    np.testing.assert_array_equal(inside, image[2:6, 2:6])  # a square of the longer side
    corner = crop_face_box(image, (-2, -2, 4, 4))
    assert corner.shape == (4, 4, 3)
    np.testing.assert_array_equal(corner[0, 0], image[0, 0])
    np.testing.assert_array_equal(corner[2:, 2:], image[:2, :2])
    with pytest.raises(ImageReadError, match="lies outside"):
        crop_face_box(image, (20, 0, 4, 4))


def test_pad_to_square_centres_with_edge_pixels() -> None:
    image = np.arange(3 * 6 * 3, dtype=np.uint8).reshape(3, 6, 3)
    square = pad_to_square(image)
    assert square.shape == (6, 6, 3)
    np.testing.assert_array_equal(square[1:4], image)  # 1 row above, 2 below
    np.testing.assert_array_equal(square[0], image[0])
    np.testing.assert_array_equal(square[5], image[2])
    assert pad_to_square(square) is square


def test_load_split_sets_every_faces_mode(tmp_path: Path) -> None:
    root = make_fer2013_folders(tmp_path / "fer2013")
    assert {s.faces for s in load_split("fer2013", root, "test").samples} == {"precropped"}
    assert {s.faces for s in load_split("folder", root / "test", None).samples} == {"auto"}
    detect = load_split("fer2013", root, "test", faces="detect")
    assert {s.faces for s in detect.samples} == {"detect"}
    with pytest.raises(KeyferError, match="unknown faces mode 'find'; choose from auto, detect"):
        load_split("fer2013", root, "test", faces="find")


def test_load_sample_image_reads_pixels_and_boxes() -> None:
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    sample = Sample(Path("list.csv#2"), 0, one_hot(0), box=(2, 2, 4, 4), pixels=pixels)
    image = load_sample_image(sample)
    assert image.shape == (4, 4, 3)
    np.testing.assert_array_equal(image[..., 1], pixels[2:6, 2:6])
    with pytest.raises(ImageReadError, match="absent.png"):
        load_sample_image(Sample(Path("absent.png"), 0, one_hot(0)))


# --- the class-balanced sampler ---------------------------------------------------------------


def test_class_balanced_weights_are_inverse_class_counts() -> None:
    labels = torch.tensor([0] * 90 + [1] * 9 + [4] * 1)
    weights = class_balanced_weights(labels)
    assert weights[0] == pytest.approx(1 / 90) and weights[-1] == pytest.approx(1.0)
    for label in (0, 1, 4):
        assert weights[labels == label].sum() == pytest.approx(1.0)
