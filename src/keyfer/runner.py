"""Running a per-image job over paths: records out, one bad file never stopping the batch.

``keyfer landmarks`` and ``keyfer predict`` are both :func:`run_images` with their own
``describe`` function.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from keyfer.drawing import draw
from keyfer.errors import KeyferError
from keyfer.faces.pipeline import FacePipeline
from keyfer.io.annotate import save_rgb
from keyfer.io.images import (
    IMAGE_EXTENSIONS,
    ImageListing,
    StrPath,
    decoded_nbytes,
    find_images,
    read_image,
)
from keyfer.io.records import RecordWriter, face_records, image_record
from keyfer.io.video import VIDEO_EXTENSIONS, is_video

log = logging.getLogger(__name__)

# (images, their paths, annotate?) -> per image: (face records, annotated copy or None)
DescribeBatch = Callable[
    [list[np.ndarray], list[Path], bool], list[tuple[list[dict[str, Any]], np.ndarray | None]]
]
DEFAULT_BATCH_IMAGES = 16
_DECODE_AHEAD = 32  # images decoded in a background thread ahead of the networks
# Bytes of decoded images held at once (about 1 GiB in all): those decoded ahead, and those
# of a batch. An image larger than its budget still goes through, alone.
_DECODE_AHEAD_BYTES = 512 << 20
_BATCH_BYTES = 512 << 20


@dataclass
class RunSummary:
    """Counts of one run; ``errors`` are inputs that could not be read or processed
    (``images`` counts every input, videos included)."""

    images: int = 0
    videos: int = 0
    faces: int = 0
    errors: int = 0
    skipped: int = 0
    empty_folders: list[Path] = field(default_factory=list)

    def line(self) -> str:
        parts = [f"{self.images - self.videos} images"]
        if self.videos:
            parts.append(f"{self.videos} videos")
        parts += [f"{self.faces} faces", f"{self.errors} errors"]
        if self.skipped:
            parts.append(f"{self.skipped} non-image files skipped")
        return ", ".join(parts)


def list_inputs(paths: Iterable[StrPath], videos: bool = False) -> ImageListing:
    """The files :func:`run_images` reads under ``paths``: images, and videos when ``videos``."""
    return find_images(paths, IMAGE_EXTENSIONS | (VIDEO_EXTENSIONS if videos else frozenset()))


def _read_unless_video(path: Path, is_video_path: Callable[[Path], bool]) -> np.ndarray | None:
    return None if is_video_path(path) else read_image(path)


def _decoded_ahead(
    paths: list[Path],
    read: Callable[[Path], np.ndarray | None],
    size: Callable[[Path], int] = decoded_nbytes,
    max_bytes: int = _DECODE_AHEAD_BYTES,
) -> Iterator[tuple[Path, Future]]:
    """(path, future of ``read(path)``) in order, decoding up to ``_DECODE_AHEAD`` images and
    ``max_bytes`` (by ``size``, the bytes each read will hold) ahead in a background thread
    (image decoders release the GIL, so decoding overlaps the networks). An image's bytes count
    from its submission until it is handed out; a larger image is decoded when none is held."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        queue: deque[tuple[Path, Future, int]] = deque()
        held = 0
        for path in paths:
            nbytes = size(path)
            while queue and (len(queue) >= _DECODE_AHEAD or held + nbytes > max_bytes):
                done_path, future, done_bytes = queue.popleft()
                held -= done_bytes
                yield done_path, future
            queue.append((path, pool.submit(read, path), nbytes))
            held += nbytes
        for done_path, future, _ in queue:
            yield done_path, future


def run_images(
    inputs: ImageListing | Iterable[StrPath],
    describe: DescribeBatch,
    writer: RecordWriter,
    annotation_path: Callable[[Path], Path] | None = None,
    desc: str = "images",
    handle_video: Callable[[Path], int] | None = None,
    batch_images: int = DEFAULT_BATCH_IMAGES,
) -> RunSummary:
    """Apply ``describe`` to the images under ``inputs`` (paths, or their :func:`list_inputs`),
    ``batch_images`` at a time; write one record per image, in order. An unreadable image gets
    an error record; when a batch fails, its images are retried one by one so that one bad image
    never costs the others. With ``annotation_path``, each image's annotated copy is saved
    where it says; one that cannot be saved makes its record an error, faces kept.

    With ``handle_video``, video files (named, or found in folders) go to it instead; it writes
    its own per-frame records and returns the number of faces it found.
    """
    listing = (
        inputs
        if isinstance(inputs, ImageListing)
        else list_inputs(inputs, videos=handle_video is not None)
    )
    summary = RunSummary(skipped=listing.skipped, empty_folders=listing.empty_folders)
    if listing.images:
        for folder in listing.empty_folders:
            log.warning("no images found in %s", folder)
    video_check = is_video if handle_video is not None else (lambda _: False)
    pending: list[tuple[Path, np.ndarray | Exception]] = []  # read images, or why not

    def flush() -> None:
        readable = [(path, image) for path, image in pending if isinstance(image, np.ndarray)]
        outcomes = iter(_describe_all(describe, readable, annotation_path is not None))
        for path, image in pending:
            outcome = next(outcomes) if isinstance(image, np.ndarray) else image
            if isinstance(image, Exception) or isinstance(outcome, Exception):
                summary.errors += 1
                log.error("%s", outcome)
                writer.write(image_record(path, error=str(outcome)))
                continue
            faces, annotated = outcome
            error = None
            # A copy that cannot be saved: an error, faces kept.
            if annotated is not None and annotation_path is not None:
                error = _save_annotation(annotation_path(path), annotated, path)
            if error is not None:
                summary.errors += 1
                log.error("%s", error)
            summary.faces += len(faces)
            height, width = image.shape[:2]
            writer.write(image_record(path, width, height, faces, error))
        bar.update(len(pending))
        pending.clear()

    read = partial(_read_unless_video, is_video_path=video_check)
    with (
        logging_redirect_tqdm(),
        tqdm(total=len(listing.images), desc=desc, unit="file", disable=None) as bar,
    ):
        for path, decoded in _decoded_ahead(listing.images, read):
            summary.images += 1
            try:
                image = decoded.result()
                if image is None and handle_video is not None:  # a video: its own records
                    flush()
                    summary.videos += 1
                    summary.faces += handle_video(path)
                    bar.update()
                    continue
            except (KeyferError, OSError) as problem:
                image = problem
            if pending and _held_bytes(pending + [(path, image)]) > _BATCH_BYTES:
                flush()  # a batch holds at most _BATCH_BYTES, or one larger image alone
            pending.append((path, image))
            if len(pending) >= batch_images:
                flush()
        flush()
    return summary


def _held_bytes(items: list[tuple[Path, np.ndarray | Exception]]) -> int:
    """Bytes of the decoded images among ``items`` (errors hold none)."""
    return sum(image.nbytes for _, image in items if isinstance(image, np.ndarray))


def _save_annotation(target: Path, annotated: np.ndarray, source: Path) -> str | None:
    """Save ``source``'s annotated copy at ``target``; why it could not be, or None."""
    try:
        save_rgb(target, annotated)
    except OSError as problem:
        return f"cannot save the annotated copy of {source}: {problem}"
    return None


def _describe_all(
    describe: DescribeBatch, items: list[tuple[Path, np.ndarray]], annotate: bool
) -> Sequence[tuple[list[dict[str, Any]], np.ndarray | None] | Exception]:
    """``describe`` on the whole batch, or image by image (errors in place) if the batch fails."""
    if not items:
        return []
    paths, images = [path for path, _ in items], [image for _, image in items]
    try:
        return describe(images, paths, annotate)
    except (KeyferError, OSError):
        if len(items) == 1:
            raise
    outcomes: list = []
    for path, image in items:
        try:
            outcomes.extend(describe([image], [path], annotate))
        except (KeyferError, OSError) as problem:
            outcomes.append(problem)
    return outcomes


def landmarks_describer(pipeline: FacePipeline) -> DescribeBatch:
    """The ``keyfer landmarks`` job: boxes, keypoints, iBUG-68 and the mesh."""

    def describe(images: list[np.ndarray], paths: list[Path], annotate: bool):
        return [
            (face_records(faces), draw(image, faces) if annotate else None)
            for image, faces in zip(images, pipeline.batch(images), strict=True)
        ]

    return describe
