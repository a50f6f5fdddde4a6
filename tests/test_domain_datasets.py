"""The sfew, tfeid and muxspace adapters, their committed splits and the tool that wrote them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keyfer.data import splits
from keyfer.data.datasets import DATASETS, load_split
from keyfer.data.labels import BASIC_CLASSES, CLASSES
from keyfer.data.split import DatasetSplit
from keyfer.errors import KeyferError
from tests.conftest import needs_real_data, real_data
from tools.make_domain_splits import DOMAINS, grouped_split

SFEW_IMAGES = {
    "Train/Angry/FilmA_000000001_00000001.png": "anger",
    "Train/Happy/FilmA_000000002_00000002.png": "happiness",
    "Train/Happy/FilmB-000000003_00000003.png": "happiness",
    "Train/Neutral/FilmB_000000004__00000004.png": "neutral",
    "Train/Surprise/Film_C_2_000000005_00000005.png": "surprise",
}
TFEID_IMAGES = {
    "images/0101a02.jpg": "neutral",
    "images/0102b01.jpg": "happiness",
    "images/0201c03.jpg": "sadness",
    "images/0202g05.jpg": "surprise",
    "images/0301f01.jpg": "fear",
}
MUXSPACE_IMAGES = {
    "images/Ann_Smith_0001.jpg": "happiness",
    "images/Ann_Smith_0002.jpg": "neutral",
    "images/Bob_0001.jpg": "contempt",
    "images/Actor_12.jpg": "disgust",
    "images/facial-expressions_123k.jpg": "surprise",
}
FIXTURE_IMAGES = {"sfew": SFEW_IMAGES, "tfeid": TFEID_IMAGES, "muxspace": MUXSPACE_IMAGES}
LOADERS: dict[str, Callable[[Path, str], DatasetSplit]] = {
    name: load for name, (load, _) in DOMAINS.items()
}


def _write(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 6, 3), 120, np.uint8)).save(path)


def _build(dataset: str, root: Path) -> Path:
    """A tiny copy of ``dataset`` under ``root``, with one image of each kind left out:

    - sfew: an image directly in ``Train/`` (no_label), one in ``Train/Contempt/`` (bad_label).
    - tfeid: ``1201002.jpg``, a name without the posed label (no_label).
    - muxspace: legend rows in mixed case; a repeated row (duplicate_row), one with another
      label (conflicting_label), an unknown label (bad_label), a row for a missing image
      (missing_image in ``all``), and an image without a row (no_label).
    """
    for name in FIXTURE_IMAGES[dataset]:
        _write(root / name)
    if dataset == "sfew":
        _write(root / "Train/FilmA_000000009_00000009.png")
        _write(root / "Train/Contempt/FilmB_000000008_00000008.png")
    elif dataset == "tfeid":
        _write(root / "images/1201002.jpg")
    else:
        _write(root / "images/Cid_0001.jpg")
        cases = [str.upper, str.lower, str.capitalize]
        rows = [
            f"7,{Path(name).name},{cases[i % 3](label)}"
            for i, (name, label) in enumerate(MUXSPACE_IMAGES.items())
        ]
        rows += ["8,Ann_Smith_0001.jpg,happiness", "8,Bob_0001.jpg,anger"]
        rows += ["8,Dee_0001.jpg,joy", "8,Gone_0001.jpg,fear"]
        (root / "legend.csv").write_text("user.id,image,emotion\n" + "\n".join(rows) + "\n")
    return root


FIXTURE_SKIPPED = {
    "sfew": {"no_label": 1, "bad_label": 1},
    "tfeid": {"no_label": 1},
    "muxspace": {"duplicate_row": 1, "conflicting_label": 1, "bad_label": 1, "no_label": 1},
}


@pytest.mark.parametrize("dataset", list(DOMAINS))
def test_all_split_labels_and_skipped_rows(dataset: str, tmp_path: Path, caplog) -> None:
    root = _build(dataset, tmp_path)
    with caplog.at_level(logging.WARNING):
        data = load_split(dataset, root, "all")
    labels = {s.path.relative_to(root).as_posix(): CLASSES[s.label] for s in data.samples}
    assert labels == FIXTURE_IMAGES[dataset]
    missing = {"missing_image": 1} if dataset == "muxspace" else {}
    assert dict(data.skipped) == FIXTURE_SKIPPED[dataset] | missing and not data.excluded
    assert data.classes == list(CLASSES if dataset == "muxspace" else BASIC_CLASSES)
    assert {s.faces for s in data.samples} == {"auto"}
    assert all(s.target[s.label] == 1 and s.target.sum() == 1 for s in data.samples)
    assert caplog.text.count("bad rows skipped") == 1


def test_a_faces_mode_other_than_the_adapters_is_marked_as_overridden(tmp_path: Path) -> None:
    """What names a source's caches (``-<mode>``, :class:`keyfer.train.sources.SourceData`)."""
    root = _build("sfew", tmp_path)
    assert not load_split("sfew", root, "all", faces="auto").faces_overridden  # its own mode
    data = load_split("sfew", root, "all", faces="precropped")
    assert data.faces_overridden and {s.faces for s in data.samples} == {"precropped"}


def test_muxspace_keeps_the_first_of_conflicting_rows(tmp_path: Path) -> None:
    data = load_split("muxspace", _build("muxspace", tmp_path), "all")
    bob = next(s for s in data.samples if s.path.name == "Bob_0001.jpg")
    assert CLASSES[bob.label] == "contempt"


@pytest.mark.parametrize(
    ("dataset", "name", "group"),
    [
        ("sfew", "Train/Angry/AlexEmma_000225840_00000024.png", "AlexEmma"),
        ("sfew", "Harry_Potter_2_001610960_00000028.png", "Harry_Potter_2"),
        ("sfew", "OceansTwelve-001817760_00000010.png", "OceansTwelve"),
        ("sfew", "IAmSam_013827920__00000055.png", "IAmSam"),
        ("sfew", "odd.png", "odd"),
        ("tfeid", "images/0101a02.jpg", "01"),
        ("muxspace", "images/George_W_Bush_0001.jpg", "George_W_Bush"),
        ("muxspace", "Avinash_30.jpg", "Avinash"),
        ("muxspace", "facial-expressions_2868588k.jpg", "facial-expressions_2868588k"),
    ],
)  # fmt: skip
def test_group_of(dataset: str, name: str, group: str) -> None:
    assert DOMAINS[dataset][1](name) == group


@pytest.mark.parametrize("dataset", list(DOMAINS))
def test_train_and_valid_follow_the_lists(dataset: str, tmp_path: Path, monkeypatch) -> None:
    """Train and valid hold their listed images; a labelled image in neither list is counted
    as not_in_split in both, and a listed image that is not there as missing_image (in
    muxspace, Gone_0001.jpg has a row; in valid, x.jpg has none)."""
    root = _build(dataset, tmp_path)
    everything = load_split(dataset, root, "all")
    names = sorted(s.path.relative_to(root).as_posix() for s in everything.samples)
    new, listed = names[0], names[1:]
    lists = {
        "train": frozenset([*listed[:2], "images/Gone_0001.jpg"]),
        "valid": frozenset([*listed[2:], "images/x.jpg"]),
    }
    monkeypatch.setattr(splits, "split_list", lambda name, split: lists[split])
    loaded = {split: load_split(dataset, root, split) for split in ("train", "valid")}
    for split, data in loaded.items():
        kept = sorted(s.path.relative_to(root).as_posix() for s in data.samples)
        assert kept == sorted(lists[split] - {"images/Gone_0001.jpg", "images/x.jpg"})
        assert data.skipped["not_in_split"] == data.skipped["missing_image"] == 1
    assert new not in set().union(*lists.values())


def test_grouped_split_keeps_groups_whole() -> None:
    rng = np.random.default_rng(0)
    labels = {
        f"p{person}_{i}.jpg": int(rng.integers(0, 7))
        for person in range(60)
        for i in range(int(rng.integers(1, 6)))
    }

    def person(name: str) -> str:
        return name.split("_")[0]

    split = grouped_split(labels, person)
    assert split == grouped_split(labels, person)
    assert sorted(split["train"] + split["valid"]) == sorted(labels)
    assert not {person(n) for n in split["train"]} & {person(n) for n in split["valid"]}
    assert 0.1 < len(split["valid"]) / len(labels) < 0.3


COMMITTED = {"sfew": 860, "tfeid": 1_223, "muxspace": 13_682}
"""Labelled images of each dataset (its ``all`` split): the committed lists cover them."""


@pytest.mark.parametrize("dataset", list(DOMAINS))
def test_committed_lists_split_by_group(dataset: str) -> None:
    group_of = DOMAINS[dataset][1]
    folder = files(splits.__name__).joinpath(dataset)
    lists = {s: folder.joinpath(f"{s}.txt").read_text().splitlines() for s in ("train", "valid")}
    for names in lists.values():
        assert names == sorted(set(names)) and all(names)
    assert len(lists["train"]) + len(lists["valid"]) == COMMITTED[dataset]
    assert not set(lists["train"]) & set(lists["valid"])
    assert not {group_of(n) for n in lists["train"]} & {group_of(n) for n in lists["valid"]}
    assert 0.15 < len(lists["valid"]) / COMMITTED[dataset] < 0.25


@pytest.mark.parametrize("dataset", list(DOMAINS))
def test_registry_and_errors(dataset: str, tmp_path: Path) -> None:
    spec = DATASETS[dataset]
    assert (spec.splits, spec.train_split, spec.eval_split) == (
        ("train", "valid", "all"), "train", "valid",
    )  # fmt: skip
    with pytest.raises(KeyferError, match="no split 'test'"):
        load_split(dataset, tmp_path, "test")
    with pytest.raises(KeyferError, match="unknown .* split 'test'"):
        LOADERS[dataset](tmp_path, "test")
    with pytest.raises(KeyferError, match="--root should be the folder holding"):
        load_split(dataset, tmp_path, "all")


REAL = {
    "sfew": ([141, 179, 93, 151, 170, 50, 76], {}, 690, 170),
    "tfeid": ([69, 226, 182, 197, 200, 198, 151], {"no_label": 9}, 976, 247),
    "muxspace": (
        [6_864, 5_693, 368, 267, 252, 208, 21, 9],
        {"duplicate_row": 7, "conflicting_label": 1, "no_label": 36},
        10_939,
        2_743,
    ),
}
"""Per dataset: images of ``all`` per class (canonical order), its skipped rows by reason, and
the sizes of the committed train and valid splits."""


@pytest.mark.parametrize(
    "dataset", [pytest.param(name, marks=needs_real_data(name)) for name in REAL]
)
def test_real_counts(dataset: str) -> None:
    per_class, skipped, train, valid = REAL[dataset]
    root = real_data(dataset)
    loaded = {split: load_split(dataset, root, split) for split in DATASETS[dataset].splits}
    counts = np.bincount([s.label for s in loaded["all"].samples], minlength=len(per_class))
    assert counts.tolist() == per_class and sum(per_class) == COMMITTED[dataset]
    assert [len(loaded[s].samples) for s in ("train", "valid")] == [train, valid]
    for data in loaded.values():
        assert dict(data.skipped) == skipped
