"""Reading videos and cameras frame by frame, and writing annotated videos, through OpenCV."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from keyfer.errors import KeyferError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
_MAX_CONSECUTIVE_FAILURES = 25


def is_video(path: Path) -> bool:
    """Whether ``path`` names a video file by its extension."""
    return path.suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class Frame:
    """One decoded frame: ``index`` in the stream, ``time_s`` from its start, RGB ``image``."""

    index: int
    time_s: float
    image: np.ndarray


class VideoSource:
    """Frames of a video file or a camera (an integer index), every ``every_n``-th one.

    A frame that fails to decode is skipped and counted in ``corrupt_frames``; the video is only
    abandoned after many failures in a row. Frame indices count the frames OpenCV delivers: when
    the demuxer drops a damaged frame silently, the loss is counted at the end of the stream and
    the later indices (and ``time_s``) are one frame early. Use as an iterator, then :meth:`close`.
    """

    def __init__(self, source: str | Path | int, every_n: int = 1) -> None:
        self.source = source
        self.every_n = every_n
        self.corrupt_frames = 0
        if isinstance(source, int):
            self.capture = cv2.VideoCapture(source)
            name = f"camera {source}"
        else:
            if not Path(source).is_file():
                raise KeyferError(f"cannot read video {source}: no such file")
            self.capture = cv2.VideoCapture(str(source))
            name = f"video {source}"
        if not self.capture.isOpened():
            raise KeyferError(f"cannot open {name}: not a video OpenCV can decode")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 30.0
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))

    def __iter__(self) -> Iterator[Frame]:
        index, failures = -1, 0
        while True:
            index += 1
            if not self.capture.grab():
                if self.frame_count <= 0 or index >= self.frame_count:
                    return  # the end of the stream (or a camera that stopped)
                failures += 1
                self.corrupt_frames += 1
                if failures >= _MAX_CONSECUTIVE_FAILURES:
                    log.warning("%s: giving up after %d unreadable frames", self.source, failures)
                    return
                continue
            if index % self.every_n:
                continue
            ok, bgr = self.capture.retrieve()
            if not ok or bgr is None:
                failures += 1
                self.corrupt_frames += 1
                continue
            failures = 0
            yield Frame(index, index / self.fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def close(self) -> None:
        self.capture.release()


class VideoWriter:
    """Writes RGB frames to an ``.mp4`` (mp4v) file, opened at the first frame's size."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            height, width = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
        self.writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
