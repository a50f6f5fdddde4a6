"""FERPlus in its official layout: ``data/FER2013{Train,Valid,Test}/label.csv`` beside the PNGs.

label.csv has no header. Each row is the image file name, its face box (always
``"(0, 0, 48, 48)"``), then ten vote counts in :data:`VOTE_COLUMNS` order. The images are 48x48
8-bit grayscale PNGs in the same folder. A row that is not UTF-8 text, whose file name is empty,
absolute or has a ``..`` part, or whose votes are not ten whole numbers in 0..:data:`MAX_VOTES`,
is malformed: skipped and counted.

Label modes (docs/method.md, 'Training'; the FER+ paper's majority protocol):

- ``majority``: zero out single votes; keep the top column if its count is more than half of
  the remaining total, and drop the image if no column has that, or if the winner is ``unknown``
  or ``NF`` (not a face). With a strict majority the winner is unique, so ties for the top are
  always dropped. The target is one-hot.
- ``probability``: the same images and labels, with the target the eight emotion votes (single
  votes zeroed) normalised to sum to 1.

This reproduces the official counts: 25,045 train and 3,191 valid images kept.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from keyfer.data.labels import CLASSES, Sample, one_hot
from keyfer.data.split import parse_count, read_csv_rows, relative_image_path
from keyfer.errors import KeyferError

log = logging.getLogger(__name__)

SPLITS: dict[str, str] = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
"""Split name -> folder name under ``ROOT/data``."""

LABEL_MODES = ("majority", "probability")
VOTE_COLUMNS: tuple[str, ...] = (*CLASSES, "unknown", "NF")
"""The ten vote columns of label.csv, in file order; the first eight are :data:`CLASSES`."""

MAX_VOTES = 1000
"""Largest vote count a row may hold. FERPlus had 10 annotators per image; a larger count is a
corrupt row (and this bound keeps every sum of counts far inside int64)."""

DROP_REASONS: dict[str, str] = {"unknown": "unknown", "NF": "not_face"}
NO_MAJORITY = "no_majority"


@dataclass
class FerPlusSplit:
    """One split as read from its label.csv.

    ``samples``: the kept images whose file exists, in file order. ``dropped``: rows the label
    rule dropped, counted by reason (``no_majority``, ``unknown``, ``not_face``). ``missing``:
    image paths of rows the rule kept but whose file does not exist (left out of ``samples``).
    ``malformed``: what is wrong with each row that is not a label row (``line N: ...``).
    """

    samples: list[Sample] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    missing: list[Path] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


def zero_single_votes(votes: Sequence[int]) -> np.ndarray:
    """(10,) vote counts -> (10,) int64 counts with every count of 1 set to 0."""
    counts = np.asarray(votes, dtype=np.int64)
    return np.where(counts == 1, 0, counts)


def majority_winner(votes: Sequence[int]) -> int | None:
    """Index into :data:`VOTE_COLUMNS` of the strict-majority column, or None if there is none.

    ``votes``: the (10,) raw counts. Single votes are zeroed first; the winner's count must then
    be more than half of the remaining total (so a tie for the top never wins).
    """
    counts = zero_single_votes(votes)
    top = int(np.argmax(counts))
    return top if 2 * counts[top] > counts.sum() else None


def vote_target(votes: Sequence[int]) -> np.ndarray:
    """(10,) raw counts -> (8,) float32 emotion votes with single votes zeroed, summing to 1.

    Raises :class:`KeyferError` when no emotion has two or more votes.
    """
    emotions = zero_single_votes(votes)[: len(CLASSES)].astype(np.float32)
    total = emotions.sum()
    if total == 0:
        raise KeyferError(f"no emotion has two or more votes in {list(votes)}")
    return emotions / total


def read_label_csv(path: str | Path, label_mode: str = "majority") -> FerPlusSplit:
    """Read one FERPlus label.csv and apply the label rule of ``label_mode``.

    Image paths are resolved in the csv's folder. Kept rows whose image file is missing, and
    malformed rows, are listed in ``missing`` and ``malformed`` and reported with one logged
    warning each; they never raise.
    """
    if label_mode not in LABEL_MODES:
        raise KeyferError(f"unknown FERPlus label mode {label_mode!r}; choose from {LABEL_MODES}")
    path = Path(path)
    split = FerPlusSplit()
    rows, split.malformed = _read_rows(path)
    for image, votes in rows:
        winner = majority_winner(votes)
        if winner is None:
            split.dropped[NO_MAJORITY] += 1
        elif winner >= len(CLASSES):
            split.dropped[DROP_REASONS[VOTE_COLUMNS[winner]]] += 1
        elif not image.is_file():
            split.missing.append(image)
        else:
            target = vote_target(votes) if label_mode == "probability" else one_hot(winner)
            split.samples.append(Sample(image, winner, target))
    if split.missing:
        log.warning(
            "%s: %d of the kept rows have no image file and are left out (first: %s)",
            path, len(split.missing), split.missing[0],
        )  # fmt: skip
    if split.malformed:
        log.warning(
            "%s: %d malformed rows skipped (first: %s)",
            path, len(split.malformed), split.malformed[0],
        )  # fmt: skip
    return split


def load_ferplus(root: str | Path, split: str, label_mode: str = "majority") -> FerPlusSplit:
    """Load split ``train``, ``valid`` or ``test`` of FERPlus.

    ``root`` is the folder holding ``data/`` as distributed, or the ``data/`` folder itself
    (the one holding the ``FER2013*`` folders).
    """
    if split not in SPLITS:
        raise KeyferError(f"unknown FERPlus split {split!r}; choose from {tuple(SPLITS)}")
    root = Path(root)
    candidates = [root / "data" / SPLITS[split] / "label.csv", root / SPLITS[split] / "label.csv"]
    for csv_path in candidates:
        if csv_path.is_file():
            return read_label_csv(csv_path, label_mode)
    raise KeyferError(
        f"no FERPlus {split} labels under {root}: looked for "
        f"{' and '.join(str(c) for c in candidates)}; --root should be the folder holding data/"
    )


def _read_rows(path: Path) -> tuple[list[tuple[Path, list[int]]], list[str]]:
    """label.csv -> (image path, ten vote counts) per label row, and what is wrong with each
    malformed row (``line N: ...``)."""
    malformed: list[str] = []

    def skip(line: int, detail: str) -> None:
        malformed.append(f"line {line}: not a FERPlus label row ({detail})")

    parsed = []
    for line, row in read_csv_rows(path, None, "FERPlus labels", skip):
        if len(row) != 2 + len(VOTE_COLUMNS):
            skip(line, f"expected {2 + len(VOTE_COLUMNS)} columns, found {len(row)}")
            continue
        image = relative_image_path(path.parent, row[0])
        votes = [parse_count(v, MAX_VOTES) for v in row[2:]]
        if image is None:
            skip(line, f"image name {row[0]!r} is empty, absolute or has a '..' part")
        elif None in votes:
            skip(line, f"votes {row[2:]} are not whole numbers in 0..{MAX_VOTES}")
        else:
            parsed.append((image, cast(list[int], votes)))
    return parsed, malformed
