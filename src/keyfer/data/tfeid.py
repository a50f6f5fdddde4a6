"""TFEID (Taiwanese Facial Expression Image Database), front view: ``images/*.jpg``.

Each image's label is the posed expression, the 5th character of its name (``0101a02.jpg``):
:data:`POSED`. A file whose name does not follow that rule (``1201002.jpg``) has no label: it is
skipped and counted (``no_label``). The observer ratings of ``Image_info.csv`` are not read
(they have no neutral, and agree with the posed labels only about 78% of the time). A name
starts with the performer's ID (2 digits): keyfer splits the images by performer
(:func:`group_of`) into the committed ``train`` and ``valid`` lists, and ``all`` is every
labelled image (:mod:`keyfer.data.splits`). The images are portraits, not tight face crops, so
their faces are found (``faces="auto"``).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from keyfer.data.labels import BASIC_CLASSES, CLASSES
from keyfer.data.split import DatasetSplit, RowTally
from keyfer.data.splits import NO_LABEL, check_split, domain_split
from keyfer.errors import KeyferError
from keyfer.io.images import find_images

DATASET = "tfeid"
IMAGES = "images"
POSED: dict[str, str] = {
    "a": "neutral", "b": "happiness", "c": "sadness", "d": "anger", "e": "disgust", "f": "fear",
    "g": "surprise",
}  # fmt: skip
"""The 5th character of a file name -> its posed expression."""
_NAME = re.compile(r"\d{4}([a-g])\d{2}")


def group_of(name: str) -> str:
    """The performer of image ``name`` (a path or a file name): its first two characters."""
    return PurePath(name).name[:2]


def load_tfeid(root: str | Path, split: str) -> DatasetSplit:
    """Split ``train``, ``valid`` or ``all`` of TFEID; ``root`` holds ``images/``.

    An image whose name carries no posed label is skipped and counted (``no_label``), as are
    those :func:`domain_split` leaves out. The split's classes are the seven basic expressions.
    """
    check_split("TFEID", split)
    root = Path(root)
    images = root / IMAGES
    if not images.is_dir():
        raise KeyferError(
            f"no TFEID folder {images}; --root should be the folder holding {IMAGES}/"
        )
    tally = RowTally(images)
    labels = {}
    for path in find_images(images).images:
        name = path.relative_to(root).as_posix()
        match = _NAME.fullmatch(path.stem)
        if match is None:
            tally.skip(NO_LABEL, None, f"{name} is not named <ID:4 digits><a-g><2 digits>")
            continue
        labels[name] = CLASSES.index(POSED[match.group(1)])
    return domain_split(root, DATASET, split, labels, tally, BASIC_CLASSES)
