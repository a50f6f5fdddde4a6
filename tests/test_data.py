"""Dataset adapters, the class vocabulary and the pre-cropped-face preparation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keyfer.data.ferplus import (
    load_ferplus,
    majority_winner,
    read_label_csv,
    vote_target,
)
from keyfer.data.folder import load_folder
from keyfer.data.labels import CLASSES, canonical_class
from keyfer.errors import KeyferError
from keyfer.preprocessing import precrop_to_facemesh, precrop_transform, to_gray3
from tests.conftest import needs_real_data, real_data

FIXTURE = Path(__file__).resolve().parent / "data" / "ferplus_fixture"
UNKNOWN, NF = 8, 9


def votes(**counts: int) -> list[int]:
    """Ten FERPlus vote counts from keyword counts (``NF`` for not-a-face)."""
    columns = (*CLASSES, "unknown", "NF")
    return [counts.get(name, 0) for name in columns]


# --- vocabulary ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("happy", "happiness"), ("Happy", "happiness"), ("sad", "sadness"), ("Angry", "anger"),
     ("fearful", "fear"), ("afraid", "fear"), ("Fear", "fear"), ("disgusted", "disgust"),
     ("surprised", "surprise"), ("Neutral", "neutral"), ("contempt", "contempt"),
     ("happiness", "happiness")],
)  # fmt: skip
def test_canonical_class_maps_common_names(name: str, canonical: str) -> None:
    assert canonical_class(name) == canonical


def test_canonical_class_unknown_lists_accepted_names() -> None:
    with pytest.raises(KeyferError, match="unknown expression class name 'bored'.*happy"):
        canonical_class("bored")


def test_classes_are_ferplus_order() -> None:
    assert CLASSES[0] == "neutral" and CLASSES[-1] == "contempt" and len(CLASSES) == 8


# --- the FERPlus majority rule --------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "winner"),
    [
        (votes(happiness=6, neutral=4), 1),
        (votes(neutral=5, sadness=5), None),  # tie for the top: dropped
        (votes(neutral=4, sadness=4, anger=2), None),  # tie, and no majority either
        (votes(neutral=5, sadness=3, anger=2), None),  # exactly half is not more than half
        (votes(neutral=3, sadness=1, anger=1, fear=1), 0),  # majority only once singles are zeroed
        (votes(neutral=4, anger=3, disgust=2, sadness=1), None),  # 4 of 9 after zeroing
        (votes(unknown=6, neutral=4), UNKNOWN),
        (votes(NF=8, neutral=2), NF),
        (votes(contempt=6, neutral=1, happiness=1, disgust=1, unknown=1), 7),
    ],
)
def test_majority_winner(counts: list[int], winner: int | None) -> None:
    assert majority_winner(counts) == winner


def test_vote_target_zeroes_single_votes_and_ignores_unknown_and_nf() -> None:
    target = vote_target(votes(neutral=6, happiness=2, surprise=1, unknown=1))
    expected = np.zeros(8, np.float32)
    expected[:2] = [0.75, 0.25]
    np.testing.assert_allclose(target, expected)
    assert target.dtype == np.float32


# --- FERPlus fixture in the official layout -------------------------------------------------


def test_ferplus_fixture_majority(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        split = load_ferplus(FIXTURE, "train")
    assert [s.path.name for s in split.samples] == ["fer0000000.png", "fer0000003.png",
                                                    "fer0000005.png"]  # fmt: skip
    assert [CLASSES[s.label] for s in split.samples] == ["happiness", "neutral", "contempt"]
    for sample in split.samples:
        assert sample.target.shape == (8,) and sample.target[sample.label] == 1.0
        assert sample.target.sum() == 1.0 and sample.path.is_file()
    assert split.dropped == {"no_majority": 1, "not_face": 1, "unknown": 1}
    assert [p.name for p in split.missing] == ["fer0000004.png"]
    assert "1 of the kept rows have no image file" in caplog.text


def test_ferplus_fixture_probability_keeps_the_same_images() -> None:
    soft = load_ferplus(FIXTURE, "train", label_mode="probability")
    hard = load_ferplus(FIXTURE, "train")
    assert [(s.path, s.label) for s in soft.samples] == [(s.path, s.label) for s in hard.samples]
    np.testing.assert_allclose(soft.samples[0].target[:3], [0.0, 0.8, 0.2])
    np.testing.assert_allclose(soft.samples[1].target, np.eye(8)[0])  # unknown votes ignored
    for sample in soft.samples:
        assert sample.target.sum() == pytest.approx(1.0)


def test_ferplus_root_may_be_the_data_folder() -> None:
    assert len(load_ferplus(FIXTURE / "data", "train").samples) == 3


def test_ferplus_errors() -> None:
    with pytest.raises(KeyferError, match="unknown FERPlus split"):
        load_ferplus(FIXTURE, "validation")
    with pytest.raises(KeyferError, match="no FERPlus valid labels"):
        load_ferplus(FIXTURE, "valid")
    with pytest.raises(KeyferError, match="unknown FERPlus label mode"):
        load_ferplus(FIXTURE, "train", label_mode="soft")


def test_read_label_csv_counts_malformed_rows(tmp_path: Path, caplog) -> None:
    bad = tmp_path / "label.csv"
    bad.write_text('a.png,"(0, 0, 48, 48)",1,2,3\nb.png,"(0, 0, 48, 48)",0,9,1,0,0,0,0,0,0,0\n')
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "b.png")
    with caplog.at_level(logging.WARNING):
        split = read_label_csv(bad)
    assert [s.path.name for s in split.samples] == ["b.png"]
    assert len(split.malformed) == 1 and split.malformed[0].startswith("line 1:")
    assert "1 malformed rows skipped" in caplog.text


@needs_real_data("ferplus")
@pytest.mark.parametrize(
    ("split", "kept", "per_class"),
    [
        ("train", 25_045, [8_733, 7_284, 3_136, 3_022, 2_098, 116, 536, 120]),
        ("valid", 3_191, [1_180, 862, 411, 348, 289, 25, 60, 16]),
    ],
)
def test_ferplus_real_majority_counts(split: str, kept: int, per_class: list[int]) -> None:
    data = load_ferplus(real_data("ferplus"), split)
    assert len(data.samples) == kept and not data.missing
    counts = np.bincount([s.label for s in data.samples], minlength=len(CLASSES))
    assert counts.tolist() == per_class


# --- class folders --------------------------------------------------------------------------


def _write_gray(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def test_folder_maps_class_names(tmp_path: Path) -> None:
    _write_gray(tmp_path / "Happy" / "a.png")
    _write_gray(tmp_path / "sad" / "b.jpg")
    _write_gray(tmp_path / "sad" / "c.png")
    _write_gray(tmp_path / "neutral" / "d.png")
    (tmp_path / ".hidden").mkdir()
    samples = load_folder(tmp_path)
    labels = {s.path.name: CLASSES[s.label] for s in samples}
    assert labels == {"a.png": "happiness", "b.jpg": "sadness", "c.png": "sadness",
                      "d.png": "neutral"}  # fmt: skip
    for sample in samples:
        np.testing.assert_array_equal(sample.target, np.eye(8, dtype=np.float32)[sample.label])


def test_folder_unknown_class_is_one_clear_error(tmp_path: Path) -> None:
    _write_gray(tmp_path / "happy" / "a.png")
    _write_gray(tmp_path / "bored" / "b.png")
    _write_gray(tmp_path / "sleepy" / "c.png")
    with pytest.raises(KeyferError, match="bored, sleepy; accepted names: .*fearful"):
        load_folder(tmp_path)


def test_folder_root_must_hold_class_folders(tmp_path: Path) -> None:
    with pytest.raises(KeyferError, match="no class folders"):
        load_folder(tmp_path)
    with pytest.raises(KeyferError, match="is not a folder"):
        load_folder(tmp_path / "absent")


# --- pre-cropped faces into FaceMesh --------------------------------------------------------


@pytest.mark.parametrize("shape", [(48, 48), (48, 48, 1), (100, 100, 3)])
@pytest.mark.parametrize("padding", ["edge", "constant", "reflect"])
def test_precrop_shape_and_dtype(shape: tuple[int, ...], padding: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    crop = precrop_to_facemesh(image, padding=padding)
    assert crop.shape == (192, 192, 3) and crop.dtype == np.uint8
    if len(shape) == 2 or shape[2] == 1:
        assert (crop[..., 0] == crop[..., 1]).all() and (crop[..., 0] == crop[..., 2]).all()


def test_precrop_padding_modes() -> None:
    image = np.full((48, 48), 10, np.uint8)
    assert precrop_to_facemesh(image, 0.25, "constant")[0, 0].tolist() == [128] * 3
    assert precrop_to_facemesh(image, 0.25, "edge")[0, 0].tolist() == [10] * 3
    assert (precrop_to_facemesh(image, 0.0, "constant") == 10).all()


def test_precrop_rejects_bad_input() -> None:
    with pytest.raises(KeyferError, match="square"):
        precrop_to_facemesh(np.zeros((48, 40), np.uint8))
    with pytest.raises(KeyferError, match="padding"):
        precrop_to_facemesh(np.zeros((48, 48), np.uint8), padding="wrap")
    with pytest.raises(KeyferError, match="margin"):
        precrop_to_facemesh(np.zeros((48, 48), np.uint8), margin=-0.1)


@pytest.mark.parametrize("size", [48, 100])
@pytest.mark.parametrize("margin", [0.0, 0.15, 0.2, 0.35])
def test_precrop_transform_maps_a_marked_pixel(size: int, margin: float) -> None:
    row, col = size // 5, size * 2 // 3
    image = np.zeros((size, size), np.uint8)
    image[row, col] = 255
    crop = precrop_to_facemesh(image, margin, "edge")[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:192, :192] + 0.5  # pixel centres at integer + 0.5
    centroid = np.array([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
    scale, offset = precrop_transform(size, margin)
    expected = np.array([col + 0.5, row + 0.5]) * scale + offset
    np.testing.assert_allclose(centroid, expected, atol=0.1)
    np.testing.assert_allclose((expected - offset) / scale, [col + 0.5, row + 0.5])


def test_precrop_transform_maps_the_source_edges() -> None:
    scale, offset = precrop_transform(48, 0.25)  # 48 + 2 * 12 = 72 px before resizing
    assert (scale, offset) == (192 / 72, 12 * 192 / 72)
    assert 48 * scale + offset == pytest.approx(192 - offset)


def test_to_gray3_uses_bt601_luma() -> None:
    image = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 200, 200]]], np.uint8)
    gray = to_gray3(image)
    assert gray.shape == (1, 4, 3) and gray.dtype == np.uint8
    assert gray[0, :, 0].tolist() == [76, 150, 29, 200]
    assert (gray[..., 0] == gray[..., 2]).all()
    with pytest.raises(KeyferError):
        to_gray3(np.zeros((4, 4), np.uint8))
