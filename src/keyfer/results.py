"""What :class:`~keyfer.api.ExpressionRecognizer` returns: faces, video frames and summaries.

Values are kept as computed (float32 arrays, unrounded floats); only the JSON records of
``to_record()`` round them, to the decimals of :mod:`keyfer.io.records`. Coordinates are
original image pixels after EXIF rotation, a pixel's centre at integer + 0.5.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from keyfer.errors import KeyferError
from keyfer.faces.pipeline import DetectedFaces
from keyfer.io.records import POSE_DECIMALS, SCORE_DECIMALS, face_record

if TYPE_CHECKING:
    import pandas


@dataclass(frozen=True)
class Expression:
    """The expression of one face crop: the ``label`` with the highest probability,
    ``probabilities`` (canonical class -> calibrated probability, in the model's class order)
    and ``keypoint_importance`` (K,) RKFA weights, or None for a model without them."""

    label: str
    probabilities: dict[str, float]
    keypoint_importance: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True, eq=False)
class Face:
    """One face and its expression.

    ``box`` (4,) x0, y0, x1, y1; ``score`` the detector's score (None for a box you gave);
    ``presence`` FaceMesh's face presence; ``keypoints6`` (6, 2) the detector's keypoints
    (None for a box you gave); ``landmarks68`` (68, 2) iBUG-68; ``mesh`` (468, 3) FaceMesh,
    z in x's pixel scale; ``label`` and ``probabilities`` as in :class:`Expression`;
    ``keypoint_importance`` (K,) or None; ``pose`` yaw, pitch and roll in degrees (see
    :mod:`keyfer.faces.pose`); ``reliable`` is False when presence, size or yaw make the
    expression doubtful (see :mod:`keyfer.api`); ``found_by`` says how the face was found, one
    of :data:`~keyfer.faces.pipeline.FOUND_BY` (``detector``, ``whole-image``: the image taken
    as one face where the detector found none, its box the image's bounds; ``given``: a box you
    gave); ``track_id`` numbers a face across the frames of a smoothed video, else None.
    """

    box: np.ndarray
    score: float | None
    presence: float
    keypoints6: np.ndarray | None
    landmarks68: np.ndarray
    mesh: np.ndarray
    label: str
    probabilities: dict[str, float]
    keypoint_importance: np.ndarray | None
    pose: dict[str, float]
    reliable: bool
    found_by: str = "detector"
    track_id: int | None = None

    def __repr__(self) -> str:
        box = ", ".join(f"{v:.1f}" for v in self.box)
        track = "" if self.track_id is None else f", track_id={self.track_id}"
        return (
            f"Face(label={self.label!r}, p={self.probabilities[self.label]:.2f}, box=[{box}], "
            f"reliable={self.reliable}{track})"
        )

    def to_record(self) -> dict[str, Any]:
        """The JSON face record of ``keyfer predict`` (values rounded there, and only there)."""
        importance = self.keypoint_importance
        return {
            **face_record(
                self.box,
                self.score,
                self.presence,
                self.keypoints6,
                self.landmarks68,
                self.mesh,
                self.found_by,
            ),
            "expression": {
                "label": self.label,
                "probabilities": {
                    name: round(p, SCORE_DECIMALS) for name, p in self.probabilities.items()
                },
            },
            "keypoint_importance": None
            if importance is None
            else [round(float(w), SCORE_DECIMALS) for w in importance],
            "pose": {angle: round(v, POSE_DECIMALS) for angle, v in self.pose.items()},
            "reliable": self.reliable,
            **({} if self.track_id is None else {"track_id": self.track_id}),
        }

    @property
    def record(self) -> dict[str, Any]:
        """Deprecated: use the attributes, or :meth:`to_record`; goes in keyfer 0.4."""
        warnings.warn(
            "Face.record is deprecated: use face.box, face.mesh, ... or face.to_record()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.to_record()


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One processed video frame: its ``frame`` index, ``time_s``, size, the ``faces`` found,
    the pipeline's :class:`~keyfer.faces.pipeline.DetectedFaces` (``pipeline_faces``: crops,
    taps) and the RGB ``image`` (for drawing), the source's ``fps``, and how many of the
    video's frames before this one were corrupt or missing (``corrupt_frames_before``; see
    :class:`keyfer.io.video.VideoSource`)."""

    frame: int
    time_s: float
    width: int
    height: int
    faces: list[Face]
    pipeline_faces: DetectedFaces = field(repr=False)
    image: np.ndarray = field(repr=False)
    fps: float
    corrupt_frames_before: int

    def to_record(self, path: str) -> dict[str, Any]:
        """The JSON record of this frame."""
        return {
            "path": path, "frame": self.frame, "time_s": round(self.time_s, 3),
            "corrupt_frames_before": self.corrupt_frames_before,
            "width": self.width, "height": self.height,
            "faces": [f.to_record() for f in self.faces], "error": None,
        }  # fmt: skip


@dataclass(frozen=True)
class VideoSummary:
    """A video's run so far: the ``frames`` processed (results yielded) and the
    ``corrupt_frames`` skipped or missing, the missing frames at its end included once the
    stream has ended."""

    frames: int
    corrupt_frames: int


class VideoFrames(Iterator[FrameResult]):
    """The :class:`FrameResult` of each processed frame of a video, read as you iterate;
    :attr:`summary` counts the frames after (or during) the iteration. :meth:`close` stops
    reading early and releases the video (also done at the end). ``corrupt_frames`` tells the
    source's count of corrupt frames so far."""

    def __init__(self, frames: Iterator[FrameResult], corrupt_frames: Callable[[], int]) -> None:
        self._frames = frames
        self._corrupt_frames = corrupt_frames
        self._count = 0

    def __iter__(self) -> VideoFrames:
        return self

    def __next__(self) -> FrameResult:
        result = next(self._frames)
        self._count += 1
        return result

    @property
    def summary(self) -> VideoSummary:
        """The frames processed and the corrupt frames counted up to now."""
        return VideoSummary(self._count, self._corrupt_frames())

    def close(self) -> None:
        """Stop reading the video and release it."""
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()


_FACE_COLUMNS = ("face", "track_id", "x0", "y0", "x1", "y1", "score", "presence", "found_by",
                 "label", "reliable", "yaw", "pitch", "roll")  # fmt: skip


def _face_row(index: int, face: Face) -> dict[str, Any]:
    values = [index, face.track_id, *face.box.tolist(), face.score, face.presence, face.found_by,
              face.label, face.reliable,
              *(face.pose[angle] for angle in ("yaw", "pitch", "roll"))]  # fmt: skip
    probabilities = {f"p_{name}": p for name, p in face.probabilities.items()}
    return {**dict(zip(_FACE_COLUMNS, values, strict=True)), **probabilities}


def to_dataframe(results: Iterable[Face | FrameResult]) -> pandas.DataFrame:
    """A pandas DataFrame with one row per face, unrounded: ``face`` (its index in its image
    or frame), ``track_id``, the box ``x0, y0, x1, y1``, ``score``, ``presence``, ``found_by``,
    ``label``, ``reliable``, ``yaw, pitch, roll`` and ``p_<class>`` per class. Give it one
    image's faces (:meth:`~keyfer.api.ExpressionRecognizer.predict`), or a video's frames, which
    add the ``frame`` and ``time_s`` columns. Needs the ``pandas`` extra (``pip install
    'keyfer[pandas]'``)."""
    try:
        import pandas
    except ImportError as error:
        raise KeyferError("to_dataframe needs pandas: pip install 'keyfer[pandas]'") from error
    rows: list[dict[str, Any]] = []
    for index, item in enumerate(results):
        if isinstance(item, FrameResult):
            frame = {"frame": item.frame, "time_s": item.time_s}
            rows += [{**frame, **_face_row(i, face)} for i, face in enumerate(item.faces)]
        else:
            rows.append(_face_row(index, item))
    return pandas.DataFrame(rows, columns=None if rows else list(_FACE_COLUMNS))
