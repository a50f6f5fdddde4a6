"""Reading videos and cameras frame by frame, and writing annotated videos, through OpenCV."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
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


def _is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (a file name that is not holds lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def _opencv_name(path: Path) -> Iterator[str]:
    """A name OpenCV can open for ``path`` while the block runs: the path itself, or, when it
    is not valid UTF-8 (OpenCV crashes on a lone surrogate), a symbolic link to it with an
    ASCII name in a temporary folder."""
    if _is_utf8(str(path)):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="keyfer-") as folder:
        link = os.path.join(folder, "link")
        try:
            os.symlink(os.path.abspath(path), link)
        except OSError as error:
            raise KeyferError(f"cannot open {path}: its name is not UTF-8 ({error})") from error
        yield link


@dataclass
class Frame:
    """One decoded frame: ``index`` in the stream, ``time_s`` from its start, RGB ``image``,
    and how many frames before it were corrupt or missing (``corrupt_before``)."""

    index: int
    time_s: float
    image: np.ndarray
    corrupt_before: int = 0


class VideoSource:
    """Frames of a video file or a camera (an integer index), every ``every_n``-th one.

    A frame that fails to decode is skipped and counted in ``corrupt_frames``; a video file's
    frames are numbered by the decoder's timestamps, so frames the decoder drops silently (e.g.
    after a damaged region of an MKV) are counted too and do not shift the later indices. A
    video is abandoned after many failures in a row. Iterating raises :class:`KeyferError` when
    no frame could be decoded, and, after the last frame, when the stream ended before the
    frame count of its container: formats whose timestamps count the packets read (AVI) drop a
    damaged region without a trace, so the indices after it are early by up to that many
    frames. Use as an iterator, then :meth:`close`.
    """

    def __init__(self, source: str | Path | int, every_n: int = 1) -> None:
        self.source = source
        self.every_n = every_n
        self.corrupt_frames = 0
        if isinstance(source, int):
            self.capture = cv2.VideoCapture(source)
            self.name = f"camera {source}"
        else:
            if not Path(source).is_file():
                raise KeyferError(f"cannot read video {source}: no such file")
            with _opencv_name(Path(source)) as name:
                self.capture = cv2.VideoCapture(name)
            self.name = f"video {source}"
        if not self.capture.isOpened():
            raise KeyferError(f"cannot open {self.name}: not a video OpenCV can decode")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 30.0
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))

    def _timestamp_index(self) -> int:
        """The index of the frame just grabbed by its decoding timestamp at the nominal frame
        rate (0 for a camera, or a stream without timestamps)."""
        if isinstance(self.source, int):
            return 0
        return round(self.capture.get(cv2.CAP_PROP_POS_MSEC) * self.fps / 1000)

    def __iter__(self) -> Iterator[Frame]:
        last, failures, yielded = -1, 0, 0  # the index of the last frame grabbed
        while True:
            if not self.capture.grab():
                failures += 1
                if self.frame_count <= 0 or last + failures >= self.frame_count:
                    break  # the end of the stream (or a camera that stopped)
                if failures >= _MAX_CONSECUTIVE_FAILURES:
                    log.warning("%s: giving up after %d unreadable frames", self.name, failures)
                    break
                continue
            index = max(last + 1 + failures, self._timestamp_index())
            self.corrupt_frames += index - last - 1
            last, failures = index, 0
            if index % self.every_n:
                continue
            ok, bgr = self.capture.retrieve()
            if not ok or bgr is None:
                self.corrupt_frames += 1
                continue
            yielded += 1
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield Frame(index, index / self.fps, rgb, self.corrupt_frames)
        if yielded == 0:
            raise KeyferError(f"cannot read {self.name}: no frame could be decoded")
        missing = self.frame_count - last - 1
        if missing > 0:
            self.corrupt_frames += missing
            raise KeyferError(
                f"{self.name}: {missing} of its {self.frame_count} frames are missing; if the "
                f"damage lies before the end, the frame numbers and times after it are up to "
                f"{missing} frames early"
            )

    def close(self) -> None:
        self.capture.release()


class VideoWriter:
    """Writes RGB frames to an ``.mp4`` (mp4v) file at ``fps``, opened at the first frame's
    size. The frames go to a temporary name beside ``path`` (opened through
    :func:`_opencv_name`), renamed to ``path`` at :meth:`close`."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self._temporary: Path | None = None

    def write(self, image: np.ndarray) -> None:
        """Append an (H, W, 3) RGB frame (all of one size)."""
        if self.writer is None:
            self.writer = self._open(*image.shape[1::-1])
        self.writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def _open(self, width: int, height: int) -> cv2.VideoWriter:
        """Open the temporary file for width x height frames; returns its writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.parent / f".keyfer-{uuid.uuid4().hex}.mp4"
        fourcc = cv2.VideoWriter.fourcc(*"mp4v")
        with _opencv_name(self.path.parent) as folder:
            name = os.path.join(folder, temporary.name)
            writer = cv2.VideoWriter(name, fourcc, self.fps, (width, height))
        if not writer.isOpened():
            temporary.unlink(missing_ok=True)
            raise OSError(f"cannot write {self.path}: OpenCV cannot write an mp4 video there")
        self._temporary = temporary
        return writer

    def close(self) -> None:
        """Finish the file and give it its name."""
        if self.writer is not None and self._temporary is not None:
            self.writer.release()
            os.replace(self._temporary, self.path)
