"""RAF-DB basic in its official layout: ``EmoLabel/list_patition_label.txt`` beside ``Image/``.

Each line of the list file is an image name and its label, separated by a space
(``train_00001.jpg 5``). Labels are 1-based, in :data:`LABELS` order. The split is the name's
prefix (``train_`` or ``test_``). Images are read from ``Image/aligned/<stem>_aligned.jpg``
(100x100 aligned faces); when ``Image/aligned`` is absent but ``Image/original`` is there, the
original photos are used and their faces are found as ``keyfer predict`` finds them (faces mode
``detect``: the largest face's aligned crop, :func:`keyfer.data.crops.sample_crop`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path, PurePath

from keyfer.data.labels import BASIC_CLASSES, Sample, label_indices, one_hot
from keyfer.data.split import (
    BAD_LABEL,
    MALFORMED_ROW,
    MISSING_IMAGE,
    NOT_UTF8,
    DatasetSplit,
    RowTally,
    is_utf8,
    parse_count,
)
from keyfer.errors import KeyferError

log = logging.getLogger(__name__)

LABELS: tuple[str, ...] = (
    "surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral",
)  # fmt: skip
"""Names of labels 1..7 of list_patition_label.txt, in file order."""
_CANONICAL = label_indices(LABELS)
SPLITS = ("train", "test")
LIST_FILE = Path("EmoLabel") / "list_patition_label.txt"


def load_rafdb(root: str | Path, split: str) -> DatasetSplit:
    """Split ``train`` or ``test`` of RAF-DB basic; ``root`` holds ``EmoLabel/`` and ``Image/``.

    Bad lines are skipped and counted: bytes that are not UTF-8, not two fields, or a name of
    neither split (in both splits), and in the split's own lines a label outside 1..7, an image
    name that is not a bare file name (it has a folder part), or a missing image. The split's
    classes are the seven basic expressions.
    """
    if split not in SPLITS:
        raise KeyferError(f"unknown RAF-DB split {split!r}; choose from {', '.join(SPLITS)}")
    root = Path(root)
    list_path = root / LIST_FILE
    if not list_path.is_file():
        raise KeyferError(
            f"no RAF-DB label list {list_path}; --root should be the RAF-DB basic folder "
            "holding EmoLabel/ and Image/"
        )
    image_for, detect = _image_layout(root)
    tally = RowTally(list_path)
    samples = []
    for line, text in enumerate(_read_lines(list_path), start=1):
        fields = text.split()
        if not fields:
            continue
        if not is_utf8(text):
            tally.skip(MALFORMED_ROW, line, NOT_UTF8)
            continue
        if len(fields) != 2 or not fields[0].startswith(tuple(f"{s}_" for s in SPLITS)):
            tally.skip(MALFORMED_ROW, line, f"expected 'train_NNNNN.jpg LABEL', got {text!r}")
            continue
        name, label = fields
        if not name.startswith(f"{split}_"):
            continue
        code = parse_count(label, len(LABELS))
        if code is None or code < 1:
            tally.skip(BAD_LABEL, line, f"label {label!r} is not 1..{len(LABELS)}")
            continue
        if PurePath(name).name != name:
            tally.skip(MALFORMED_ROW, line, f"image name {name!r} is not a bare file name")
            continue
        path = image_for(name)
        if not path.is_file():
            tally.skip(MISSING_IMAGE, line, f"no image {path}")
            continue
        index = _CANONICAL[code - 1]
        samples.append(
            Sample(path, index, one_hot(index), faces="detect" if detect else "precropped")
        )
    return tally.split(samples, list(BASIC_CLASSES))


def _image_layout(root: Path) -> tuple[Callable[[str], Path], bool]:
    """(name -> image path, whether faces must be detected) for the images under ``root``."""
    aligned, original = root / "Image" / "aligned", root / "Image" / "original"
    if aligned.is_dir():
        return lambda name: aligned / f"{Path(name).stem}_aligned.jpg", False
    if original.is_dir():
        log.info("%s is absent: reading %s and detecting the faces", aligned, original)
        return lambda name: original / name, True
    raise KeyferError(f"no RAF-DB images under {root}: expected {aligned} (or {original})")


def _read_lines(path: Path) -> list[str]:
    """The lines of the list file; bytes that are not UTF-8 are kept as lone surrogates
    (:func:`keyfer.data.split.is_utf8` finds them)."""
    try:
        return path.read_text(encoding="utf-8-sig", errors="surrogateescape").splitlines()
    except OSError as exc:
        raise KeyferError(f"cannot read the RAF-DB label list {path}: {exc}") from exc
