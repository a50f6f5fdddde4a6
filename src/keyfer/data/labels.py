"""keyfer's one expression vocabulary, the folder names mapped onto it, and a labelled sample.

The canonical classes and their order are those of FERPlus (docs/method.md, 'Datasets and
splits'). Every dataset adapter maps its labels onto them, and a label index always means a
position in :data:`CLASSES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keyfer.errors import KeyferError

CLASSES: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)  # fmt: skip
"""Canonical class names in canonical order; a label index is a position in this tuple."""

BASIC_CLASSES: tuple[str, ...] = tuple(c for c in CLASSES if c != "contempt")
"""The seven basic expressions (no contempt) in canonical order: RAF-DB, FER2013, AffectNet-7."""

_ALIASES: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral",),
    "happiness": ("happiness", "happy"),
    "surprise": ("surprise", "surprised"),
    "sadness": ("sadness", "sad"),
    "anger": ("anger", "angry"),
    "disgust": ("disgust", "disgusted"),
    "fear": ("fear", "fearful", "afraid"),
    "contempt": ("contempt",),
}

CLASS_NAMES: dict[str, str] = {
    form: canonical
    for canonical, aliases in _ALIASES.items()
    for alias in aliases
    for form in (alias, alias.capitalize())
}
"""Accepted class names (as in dataset folders) -> canonical name; lower-case and Capitalised."""


def canonical_class(name: str) -> str:
    """The canonical class name for ``name`` (e.g. ``"Happy"`` -> ``"happiness"``).

    Raises :class:`KeyferError` listing the accepted names when ``name`` is not one of them.
    """
    try:
        return CLASS_NAMES[name]
    except KeyError:
        raise KeyferError(
            f"unknown expression class name {name!r}; accepted names: {accepted_names()}"
        ) from None


def accepted_names() -> str:
    """The accepted class names as one comma-separated string, for error messages."""
    return ", ".join(sorted(CLASS_NAMES, key=lambda n: (CLASSES.index(CLASS_NAMES[n]), n)))


FACES_MODES: tuple[str, ...] = ("auto", "detect", "precropped")
"""How a labelled image's face is found: ``auto`` (detect, else the whole image as a face crop
when FaceMesh sees a face in it), ``detect`` (the largest detected face), ``precropped`` (the
image is a face crop, padded to a square when it is not one)."""


@dataclass(frozen=True)
class Sample:
    """One labelled image; :func:`keyfer.data.samples.load_sample_image` reads its face.

    ``path``: the image file, or for ``pixels`` read from a list file, that file's path with
    ``#<line number>`` appended (for messages only). ``label``: index into :data:`CLASSES`.
    ``target``: (8,) float32 soft target over :data:`CLASSES` summing to 1 (one-hot unless the
    label mode gives votes). ``box``: where the face is, when the image holds more than the
    face: (x, y, w, h) in source-image pixels, spanning [x, x + w) x [y, y + h) (a pixel's
    centre at integer + 0.5). ``pixels``: the (H, W) or (H, W, 3) uint8 image itself, when it
    is not a file. ``faces``: how the face is found in the image, one of :data:`FACES_MODES`
    (``precropped``: the image is the face; ``detect``: the face detector finds it; ``auto``:
    the detector, else the whole image as a face crop).
    """

    path: Path
    label: int
    target: np.ndarray
    box: tuple[float, float, float, float] | None = None
    pixels: np.ndarray | None = None
    faces: str = "precropped"


def one_hot(label: int) -> np.ndarray:
    """Label index -> (8,) float32 one-hot target over :data:`CLASSES`."""
    target = np.zeros(len(CLASSES), dtype=np.float32)
    target[label] = 1.0
    return target


def label_indices(names: Sequence[str]) -> tuple[int, ...]:
    """A dataset's label names in its own order -> their indices into :data:`CLASSES`."""
    return tuple(CLASSES.index(canonical_class(name)) for name in names)
