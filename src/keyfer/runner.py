"""Running a per-image job over paths: records out, one bad file never stopping the batch.

``keyfer landmarks`` and ``keyfer predict`` are both :func:`run_images` with their own
``describe`` function.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from keyfer.errors import KeyferError
from keyfer.faces.pipeline import FacePipeline
from keyfer.io.annotate import draw_faces, save_rgb
from keyfer.io.images import IMAGE_EXTENSIONS, find_images, read_image
from keyfer.io.records import RecordWriter, face_records, image_record
from keyfer.io.video import VIDEO_EXTENSIONS, is_video

log = logging.getLogger(__name__)

# image -> (face records, annotated copy or None when not asked for)
Describe = Callable[[np.ndarray, bool], tuple[list[dict[str, Any]], np.ndarray | None]]


@dataclass
class RunSummary:
    """Counts of one run; ``errors`` are inputs that could not be read or processed
    (``images`` counts every input, videos included)."""

    images: int = 0
    faces: int = 0
    errors: int = 0
    skipped: int = 0
    empty_folders: list[Path] = field(default_factory=list)

    def line(self) -> str:
        parts = [f"{self.images} images", f"{self.faces} faces", f"{self.errors} errors"]
        if self.skipped:
            parts.append(f"{self.skipped} non-image files skipped")
        return ", ".join(parts)


def annotation_path(annotate_dir: Path, image_path: Path) -> Path:
    """Where the annotated copy of ``image_path`` goes: its path relative to the working
    directory when it lies below it, else its name, under ``annotate_dir``, as ``.jpg``."""
    try:
        relative = image_path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        relative = Path(image_path.name)
    return annotate_dir / relative.with_suffix(".jpg")


def run_images(
    paths: Iterable[str | os.PathLike[str]],
    describe: Describe,
    writer: RecordWriter,
    annotate_dir: Path | None = None,
    desc: str = "images",
    handle_video: Callable[[Path], int] | None = None,
) -> RunSummary:
    """Apply ``describe`` to every image under ``paths``; write one record per image.

    With ``handle_video``, video files (named, or found in folders) go to it instead; it writes
    its own per-frame records and returns the number of faces it found.
    """
    extensions = IMAGE_EXTENSIONS | (VIDEO_EXTENSIONS if handle_video else frozenset())
    listing = find_images(paths, extensions)
    summary = RunSummary(skipped=listing.skipped, empty_folders=listing.empty_folders)
    if listing.images:
        for folder in listing.empty_folders:
            log.warning("no images found in %s", folder)
    for path in tqdm(listing.images, desc=desc, unit="img", disable=None):
        summary.images += 1
        try:
            if handle_video is not None and is_video(path):
                summary.faces += handle_video(path)
                continue
            image = read_image(path)
            faces, annotated = describe(image, annotate_dir is not None)
            if annotated is not None:
                save_rgb(annotation_path(annotate_dir, path), annotated)
        except (KeyferError, OSError) as error:
            summary.errors += 1
            log.error("%s", error)
            writer.write(image_record(path, error=str(error)))
            continue
        summary.faces += len(faces)
        height, width = image.shape[:2]
        writer.write(image_record(path, width, height, faces))
    return summary


def landmarks_describer(pipeline: FacePipeline) -> Describe:
    """The ``keyfer landmarks`` job: boxes, keypoints, iBUG-68 and the mesh."""

    def describe(image: np.ndarray, annotate: bool):
        faces = pipeline(image)
        return face_records(faces), draw_faces(image, faces) if annotate else None

    return describe
