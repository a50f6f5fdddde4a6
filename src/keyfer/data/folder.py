"""The generic class-folder layout: ``ROOT/<class name>/**/*.jpg`` (any image extension).

Folder names are mapped onto the canonical classes by :func:`canonical_class`, so ``happy``,
``Happy`` and ``happiness`` are one class. Hidden folders and files directly in ROOT are ignored.
The images may be photos of any shape and framing: by default their faces are found in ``auto``
mode (:data:`~keyfer.data.labels.FACES_MODES`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from keyfer.data.labels import (
    CLASS_NAMES,
    CLASSES,
    Sample,
    accepted_names,
    canonical_class,
    one_hot,
)
from keyfer.errors import KeyferError
from keyfer.io.images import find_images

log = logging.getLogger(__name__)


def load_folder(root: str | Path, faces: str = "auto") -> list[Sample]:
    """All images under the class folders of ``root``, with one-hot targets and the faces mode
    ``faces`` (FER2013's folders of 48x48 face crops: ``precropped``).

    Samples come ordered by folder name, then as :func:`find_images` walks each folder. An
    unknown folder name raises one :class:`KeyferError` naming every unknown folder and the
    accepted names.
    """
    root = Path(root)
    if not root.is_dir():
        raise KeyferError(f"class-folder dataset root {root} is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in CLASS_NAMES]
    if unknown:
        raise KeyferError(
            f"{root}: unknown class folder name(s) {', '.join(unknown)}; "
            f"accepted names: {accepted_names()}"
        )
    if not folders:
        raise KeyferError(f"{root} holds no class folders; expected e.g. {root / 'happy'}/")
    samples: list[Sample] = []
    for folder in folders:
        listing = find_images(folder)
        if listing.skipped:
            log.warning("%s: %d files without an image extension ignored", folder, listing.skipped)
        label = CLASSES.index(canonical_class(folder.name))
        samples.extend(Sample(path, label, one_hot(label), faces=faces) for path in listing.images)
    return samples
