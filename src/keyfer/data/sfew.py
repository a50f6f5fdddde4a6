"""SFEW 2.0 (Static Facial Expressions in the Wild), its Train split: ``Train/<Class>/*.png``.

860 faces from film stills (143x181 RGB), labelled by their class folder: ``Angry``,
``Disgust``, ``Fear``, ``Happy``, ``Neutral``, ``Sad``, ``Surprise`` (the seven basic
expressions). SFEW's own Val split is not read: keyfer splits Train by film (:func:`group_of`)
into the committed ``train`` and ``valid`` lists, and ``all`` is every image
(:mod:`keyfer.data.splits`). The images are photos, so their faces are found (``faces="auto"``).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from keyfer.data.labels import BASIC_CLASSES, CLASS_NAMES, CLASSES
from keyfer.data.split import BAD_LABEL, DatasetSplit, RowTally
from keyfer.data.splits import NO_LABEL, check_split, domain_split
from keyfer.errors import KeyferError
from keyfer.io.images import find_images

DATASET = "sfew"
TRAIN = "Train"
_FILM = re.compile(r"(.+?)[-_]+\d{9}_+\d{8}")


def group_of(name: str) -> str:
    """The film of image ``name`` (a path or a file name): the part of the file name before
    ``_<9 digits>_<8 digits>.png`` (``AlexEmma_000225840_00000024.png`` -> ``AlexEmma``; a few
    names have ``-`` or ``__`` there), or the whole stem of a name without that ending."""
    stem = PurePath(name).stem
    match = _FILM.fullmatch(stem)
    return match.group(1) if match else stem


def load_sfew(root: str | Path, split: str) -> DatasetSplit:
    """Split ``train``, ``valid`` or ``all`` of SFEW; ``root`` holds ``Train/``.

    An image outside the class folders (``no_label``) or in a folder that is not one of the
    seven classes (``bad_label``) is skipped and counted, as are those :func:`domain_split`
    leaves out. The split's classes are the seven basic expressions.
    """
    check_split("SFEW", split)
    root = Path(root)
    train = root / TRAIN
    if not train.is_dir():
        raise KeyferError(f"no SFEW folder {train}; --root should be the folder holding {TRAIN}/")
    tally = RowTally(train)
    labels = {}
    for path in find_images(train).images:
        name, folders = path.relative_to(root).as_posix(), path.relative_to(train).parts[:-1]
        if not folders:
            tally.skip(NO_LABEL, None, f"{name} is not in a class folder")
            continue
        canonical = CLASS_NAMES.get(folders[0])
        if canonical not in BASIC_CLASSES:
            tally.skip(BAD_LABEL, None, f"{name}: {folders[0]!r} is not a basic expression")
            continue
        labels[name] = CLASSES.index(canonical)
    return domain_split(root, DATASET, split, labels, tally, BASIC_CLASSES)
