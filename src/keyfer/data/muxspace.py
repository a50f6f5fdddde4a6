"""muxspace/facial_expressions: ``legend.csv`` beside ``images/*.jpg``.

legend.csv has the header ``user.id,image,emotion``, then one row per image: who labelled it, its
file name in ``images/``, and its label, one of the eight classes in any case (``HAPPINESS``).
A second row for an image is skipped and counted: :data:`DUPLICATE_ROW` when it repeats the
label, :data:`CONFLICTING_LABEL` when it gives another one (the first row's label is kept). An
image without a row is skipped and counted (``no_label``).

Most images are LFW photos named ``<Person>_<NNNN>.jpg``; the others are film faces named
``<Actor>_<N>.jpg``, and a few ``facial-expressions_<id>.jpg``. keyfer splits them by person
(:func:`group_of`) into the committed ``train`` and ``valid`` lists, and ``all`` is every
labelled image (:mod:`keyfer.data.splits`). The images are photos, not all tight crops, so their
faces are found (``faces="auto"``).
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path, PurePath

from keyfer.data.labels import CLASS_NAMES, CLASSES
from keyfer.data.split import (
    BAD_LABEL,
    MALFORMED_ROW,
    DatasetSplit,
    RowTally,
    read_csv_rows,
    relative_image_path,
)
from keyfer.data.splits import NO_LABEL, check_split, domain_split
from keyfer.errors import KeyferError
from keyfer.io.images import find_images

DATASET = "muxspace"
COLUMNS: tuple[str, ...] = ("user.id", "image", "emotion")
LEGEND = "legend.csv"
IMAGES = "images"
DUPLICATE_ROW = "duplicate_row"
"""Skip reason of a row that repeats an earlier row's image and label."""
CONFLICTING_LABEL = "conflicting_label"
"""Skip reason of a row that gives an earlier row's image another label."""
_PERSON = re.compile(r"(.+)_\d+")


def group_of(name: str) -> str:
    """The person in image ``name`` (a path or a file name): the stem before its ``_<digits>``
    suffix (``George_W_Bush_0001.jpg`` -> ``George_W_Bush``, ``Avinash_30.jpg`` ->
    ``Avinash``), or the whole stem, a group of its own, for a name without one
    (``facial-expressions_2868588k.jpg``)."""
    stem = PurePath(name).stem
    match = _PERSON.fullmatch(stem)
    return match.group(1) if match else stem


def load_muxspace(root: str | Path, split: str) -> DatasetSplit:
    """Split ``train``, ``valid`` or ``all`` of muxspace; ``root`` holds ``legend.csv`` and
    ``images/``.

    Bad rows (a wrong column count, bytes that are not UTF-8, an image name that is empty,
    absolute or has a ``..`` part, an unknown label) and repeated rows are skipped and counted,
    as are images without a row and those :func:`domain_split` leaves out. The split's classes
    are all eight.
    """
    check_split("muxspace", split)
    root = Path(root)
    legend, images = root / LEGEND, root / IMAGES
    if not legend.is_file() or not images.is_dir():
        raise KeyferError(
            f"no muxspace {LEGEND} and {IMAGES}/ under {root}; --root should be the folder "
            f"holding both"
        )
    tally = RowTally(legend)
    labels: dict[str, int] = {}
    named = set()
    skip_malformed = partial(tally.skip, MALFORMED_ROW)
    for line, row in read_csv_rows(legend, COLUMNS[0], "the muxspace legend", skip_malformed):
        if len(row) != len(COLUMNS):
            tally.skip(MALFORMED_ROW, line, f"expected {len(COLUMNS)} columns, found {len(row)}")
            continue
        path = relative_image_path(images, row[1])
        if path is None:
            tally.skip(MALFORMED_ROW, line, f"image name {row[1]!r} is empty, absolute or has '..'")
            continue
        name = path.relative_to(root).as_posix()
        named.add(name)
        canonical = CLASS_NAMES.get(row[2].strip().lower())
        if canonical is None:
            tally.skip(BAD_LABEL, line, f"emotion {row[2]!r} is not one of {', '.join(CLASSES)}")
            continue
        label = CLASSES.index(canonical)
        if name in labels:
            reason = DUPLICATE_ROW if labels[name] == label else CONFLICTING_LABEL
            tally.skip(reason, line, f"{name} has a row already ({CLASSES[labels[name]]}, kept)")
            continue
        labels[name] = label
    for path in find_images(images).images:
        name = path.relative_to(root).as_posix()
        if name not in named:
            tally.skip(NO_LABEL, None, f"{name} has no row in {LEGEND}")
    return domain_split(root, DATASET, split, labels, tally, CLASSES)
