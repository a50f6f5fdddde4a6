"""FER2013 in its two distributed layouts.

- The challenge CSV, ``fer2013.csv`` (at the root or in ``fer2013/``), with the header
  ``emotion,pixels,Usage``: ``emotion`` is a code in :data:`EMOTIONS` order (0..6), ``pixels``
  the 48x48 gray image as 2304 space-separated values 0..255 in row-major order, and ``Usage``
  one of ``Training``, ``PublicTest``, ``PrivateTest`` (splits ``train``, ``publictest``,
  ``privatetest``). Images stay in memory (:attr:`Sample.pixels`).
- The Kaggle class-folder layout, ``train/`` and ``test/`` with folders angry, disgust, fear,
  happy, neutral, sad and surprise (splits ``train`` and ``test``).

When both are under the root, ``train`` is read from the CSV.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from keyfer.data.folder import load_folder
from keyfer.data.labels import BASIC_CLASSES, Sample, label_indices, one_hot
from keyfer.data.split import (
    BAD_LABEL,
    BAD_PIXELS,
    MALFORMED_ROW,
    DatasetSplit,
    RowTally,
    parse_count,
    read_csv_rows,
)
from keyfer.errors import KeyferError

EMOTIONS: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral",
)  # fmt: skip
"""Names of emotion codes 0..6, in code order."""
_CANONICAL = label_indices(EMOTIONS)
USAGES: dict[str, str] = {
    "train": "Training",
    "publictest": "PublicTest",
    "privatetest": "PrivateTest",
}
"""CSV split name -> its ``Usage`` value."""
FOLDER_SPLITS = ("train", "test")
SPLITS = ("train", "publictest", "privatetest", "test")
SIDE = 48
CSV_NAME = "fer2013.csv"


def load_fer2013(root: str | Path, split: str) -> DatasetSplit:
    """Split ``train``, ``publictest`` or ``privatetest`` of the CSV, or ``train`` or ``test`` of
    the class folders, under ``root``. Bad CSV rows are skipped and counted: a wrong column count,
    an unknown Usage or bytes that are not UTF-8 (in every split), and in the split's own rows an
    emotion outside 0..6 or a pixel string that is not 2304 values 0..255."""
    if split not in SPLITS:
        raise KeyferError(f"unknown FER2013 split {split!r}; choose from {', '.join(SPLITS)}")
    root = Path(root)
    csv_path = next(
        (p for p in (root / CSV_NAME, root / "fer2013" / CSV_NAME) if p.is_file()), None
    )
    if csv_path is not None and split in USAGES:
        return _load_csv(csv_path, USAGES[split])
    if split in FOLDER_SPLITS and (root / split).is_dir():
        return DatasetSplit(load_folder(root / split, "precropped"), list(BASIC_CLASSES))
    raise KeyferError(
        f"no FER2013 {split} split under {root}: expected {root / CSV_NAME} (splits "
        f"{', '.join(USAGES)}) or class folders {root / 'train'}/ and {root / 'test'}/"
    )


def _load_csv(path: Path, usage: str) -> DatasetSplit:
    tally = RowTally(path)
    samples = []
    skip_malformed = partial(tally.skip, MALFORMED_ROW)
    for line, row in read_csv_rows(path, "emotion", "FER2013", skip_malformed):
        if len(row) != 3:
            tally.skip(MALFORMED_ROW, line, f"expected 3 columns, found {len(row)}")
            continue
        emotion, pixels, row_usage = (field.strip() for field in row)
        if row_usage not in USAGES.values():
            tally.skip(MALFORMED_ROW, line, f"unknown Usage {row_usage!r}")
            continue
        if row_usage != usage:
            continue
        code = parse_count(emotion, len(EMOTIONS) - 1)
        if code is None:
            tally.skip(BAD_LABEL, line, f"emotion {emotion!r} is not 0..{len(EMOTIONS) - 1}")
            continue
        image = parse_pixels(pixels)
        if image is None:
            tally.skip(BAD_PIXELS, line, f"pixels are not {SIDE * SIDE} values 0..255")
            continue
        index = _CANONICAL[code]
        samples.append(Sample(Path(f"{path}#{line}"), index, one_hot(index), pixels=image))
    return tally.split(samples, list(BASIC_CLASSES))


def parse_pixels(text: str) -> np.ndarray | None:
    """A ``pixels`` field -> the (48, 48) uint8 image (row-major), or None when it is not 2304
    integers in 0..255."""
    values = text.split()
    if len(values) != SIDE * SIDE:
        return None
    try:
        numbers = np.array(values, dtype=np.int64)
    except (ValueError, OverflowError):  # not integers, or past int64
        return None
    if numbers.min() < 0 or numbers.max() > 255:
        return None
    return numbers.astype(np.uint8).reshape(SIDE, SIDE)
