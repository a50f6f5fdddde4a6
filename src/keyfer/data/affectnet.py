"""AffectNet (manually annotated part) in its official layout.

``Manually_Annotated_file_lists/{training,validation}.csv`` (or the two CSVs at the root) beside
``Manually_Annotated_Images/``. Each CSV has the :data:`COLUMNS` header (a file without it is
read in that column order) and one row per image: its path relative to
``Manually_Annotated_Images``, the face box (x, y, width, height in image pixels), 68 landmarks
as ``x;y;...``, the expression code, valence and arousal.

Expression codes 0..7 are :data:`EXPRESSIONS`; 8..10 (none, uncertain, non-face) are left out,
and AffectNet-7 also leaves out contempt (7). The face is cut out around the CSV box
(:mod:`keyfer.data.samples`). The validation set is AffectNet's test set.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from keyfer.data.labels import BASIC_CLASSES, CLASSES, Sample, label_indices, one_hot
from keyfer.data.split import (
    BAD_BOX,
    BAD_LABEL,
    MALFORMED_ROW,
    MISSING_IMAGE,
    DatasetSplit,
    RowTally,
    read_csv_rows,
    relative_image_path,
)
from keyfer.errors import KeyferError

COLUMNS: tuple[str, ...] = (
    "subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
    "expression", "valence", "arousal",
)  # fmt: skip
EXPRESSIONS: tuple[str, ...] = (
    "neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt",
)  # fmt: skip
"""Names of expression codes 0..7, in code order."""
_CANONICAL = label_indices(EXPRESSIONS)
EXCLUDED_CODES: dict[int, str] = {8: "none", 9: "uncertain", 10: "not_face"}
"""Codes AffectNet gives to rows without a usable expression -> the reason counted."""
CONTEMPT = 7
SPLITS: dict[str, str] = {"train": "training.csv", "validation": "validation.csv"}
IMAGES = "Manually_Annotated_Images"
LISTS = "Manually_Annotated_file_lists"


def load_affectnet(root: str | Path, split: str, num_classes: int = 8) -> DatasetSplit:
    """Split ``train`` or ``validation`` of AffectNet with 8 classes, or 7 (no contempt).

    ``root`` holds ``Manually_Annotated_Images/`` and the CSVs (in
    ``Manually_Annotated_file_lists/`` or beside it). Bad rows (a wrong column count, bytes that
    are not UTF-8, a bad box, an unknown code, an image path that is absolute or has a ``..``
    part, a missing image) are skipped and counted; codes 8..10 (and 7 for 7
    classes) are excluded and counted.
    """
    if split not in SPLITS:
        raise KeyferError(f"unknown AffectNet split {split!r}; choose from {', '.join(SPLITS)}")
    if num_classes not in (7, 8):
        raise KeyferError(f"AffectNet has 7 or 8 classes, not {num_classes}")
    root = Path(root)
    csv_path = _find_list(root, SPLITS[split])
    images = root / IMAGES
    if not images.is_dir():
        raise KeyferError(f"no AffectNet image folder {images} beside {csv_path}")
    tally = RowTally(csv_path)
    samples = []
    skip_malformed = partial(tally.skip, MALFORMED_ROW)
    for line, row in read_csv_rows(csv_path, COLUMNS[0], "the AffectNet list", skip_malformed):
        if len(row) != len(COLUMNS):
            tally.skip(MALFORMED_ROW, line, f"expected {len(COLUMNS)} columns, found {len(row)}")
            continue
        try:
            code = int(row[6])
        except ValueError:
            tally.skip(BAD_LABEL, line, f"expression {row[6]!r} is not an integer")
            continue
        if code in EXCLUDED_CODES or (code == CONTEMPT and num_classes == 7):
            tally.exclude(EXCLUDED_CODES.get(code, "contempt"))
            continue
        if not 0 <= code < len(EXPRESSIONS):
            tally.skip(BAD_LABEL, line, f"expression code {code} is not 0..10")
            continue
        box = _parse_box(row[1:5])
        if box is None:
            tally.skip(BAD_BOX, line, f"face box {row[1:5]} is not four numbers with w, h > 0")
            continue
        path = relative_image_path(images, row[0])
        if path is None:
            tally.skip(MALFORMED_ROW, line, f"image path {row[0]!r} is empty, absolute or has '..'")
            continue
        if not path.is_file():
            tally.skip(MISSING_IMAGE, line, f"no image {path}")
            continue
        index = _CANONICAL[code]
        samples.append(Sample(path, index, one_hot(index), box=box))
    return tally.split(samples, list(CLASSES if num_classes == 8 else BASIC_CLASSES))


def _find_list(root: Path, name: str) -> Path:
    candidates = [root / LISTS / name, root / name]
    for path in candidates:
        if path.is_file():
            return path
    raise KeyferError(
        f"no AffectNet list {name} under {root}: looked for "
        f"{' and '.join(map(str, candidates))}; --root should be the folder holding {IMAGES}/"
    )


def _parse_box(fields: list[str]) -> tuple[float, float, float, float] | None:
    try:
        x, y, w, h = (float(v) for v in fields)
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    return x, y, w, h
