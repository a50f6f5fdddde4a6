"""JSON records of keyfer's outputs (schema version 3) and the writers that stream them.

An image record is ``{"path", "width", "height", "faces": [...], "error"}``; each face is
``{"box", "score", "presence", "found_by", "keypoints6", "landmarks68", "mesh"}``, ``found_by``
one of :data:`~keyfer.faces.pipeline.FOUND_BY`. Coordinates are original image pixels after EXIF
rotation, a pixel's centre at integer + 0.5; mesh z is in x's pixel scale.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import torch

from keyfer.faces.pipeline import DetectedFaces
from keyfer.io.outputs import STDOUT

SCHEMA_VERSION = 3
CSV_COLUMNS = (
    "path",
    "frame",
    "time_s",
    "face",
    "track_id",
    "x0",
    "y0",
    "x1",
    "y1",
    "score",
    "found_by",
    "label",
    "reliable",
    "yaw",
    "pitch",
    "roll",
    "error",
)
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, CSV injection).
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
COORD_DECIMALS = 2
"""Decimals of the records' coordinates (boxes, keypoints, landmarks, mesh): 0.01 px."""
SCORE_DECIMALS = 4
"""Decimals of the records' detector scores, presence, probabilities and importances."""
POSE_DECIMALS = 2
"""Decimals of the records' head pose angles, in degrees."""


def rounded(values: np.ndarray | torch.Tensor | float | None, decimals: int) -> Any:
    """``values`` rounded half to even to ``decimals`` in float64, as (nested) Python floats;
    None stays None."""
    if values is None:
        return None
    # numpy rounds and converts to lists about 5x faster than torch.
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: the records' nested lists are thousands of new
    containers, and each collection they trigger walks the whole heap (torch's objects too),
    which made building them several times slower. Reference counting still frees memory."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def face_record(
    box: np.ndarray,
    score: float | None,
    presence: float,
    keypoints6: np.ndarray | None,
    landmarks68: np.ndarray,
    mesh: np.ndarray,
    found_by: str,
) -> dict[str, Any]:
    """The JSON-ready record of one face, from its (4,) box, (6, 2) keypoints, (68, 2)
    landmarks and (468, 3) mesh in image pixels (score and keypoints None for a given box) and
    how it was found (:data:`~keyfer.faces.pipeline.FOUND_BY`)."""
    with _cyclic_gc_paused():
        return {
            "box": rounded(box, COORD_DECIMALS),
            "score": rounded(score, SCORE_DECIMALS),
            "presence": rounded(presence, SCORE_DECIMALS),
            "found_by": found_by,
            "keypoints6": rounded(keypoints6, COORD_DECIMALS),
            "landmarks68": rounded(landmarks68, COORD_DECIMALS),
            "mesh": rounded(mesh, COORD_DECIMALS),
        }


def face_records(faces: DetectedFaces) -> list[dict[str, Any]]:
    """One JSON-ready dict per face (:func:`face_record`), in the order of ``faces``."""
    columns = [
        faces.boxes.numpy(),
        [None] * len(faces) if faces.scores is None else faces.scores.numpy(),
        faces.presence.numpy(),
        [None] * len(faces) if faces.keypoints6 is None else faces.keypoints6.numpy(),
        faces.landmarks68.numpy(),
        faces.mesh.numpy(),
    ]
    with _cyclic_gc_paused():
        return [
            face_record(box, score, presence, points, landmarks, mesh, faces.found_by)
            for box, score, presence, points, landmarks, mesh in zip(*columns, strict=True)
        ]


def image_record(
    path: str | Path,
    width: int | None = None,
    height: int | None = None,
    faces: list[dict[str, Any]] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The record of one input image; an unreadable image has ``error`` set and no faces."""
    return {
        "path": str(path),
        "width": width,
        "height": height,
        "faces": faces or [],
        "error": error,
    }


def _summary(faces: list[dict[str, Any]]) -> str:
    expressions = [f["expression"] for f in faces if "expression" in f]
    if not expressions:
        return f"{len(faces)} faces"
    return ", ".join(f"{e['label']} {e['probabilities'][e['label']]:.2f}" for e in expressions)


def _csv_cell(value: Any) -> Any:
    """``value`` safe for a spreadsheet: a text cell that would run as a formula (it starts with
    =, +, -, @, a tab or a carriage return and is not a number) gets a leading single quote, as
    OWASP advises; numbers, including negative ones, are left as they are."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_TRIGGERS):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def _csv_flag(value: bool | None) -> str:
    """A JSON boolean as a CSV cell: true, false, or empty when absent."""
    return "" if value is None else json.dumps(value)


def _csv_rows(record: dict[str, Any], classes: list[str]) -> list[list[Any]]:
    """The ``--csv`` rows of one image (or frame) record: one per face, in :data:`CSV_COLUMNS`
    order then ``p_<class>`` per class, text cells escaped by :func:`_csv_cell`. An image with an
    error or without faces still gets one row, its face fields empty (and ``error`` set)."""
    image = [record["path"], record.get("frame", ""), record.get("time_s", "")]
    rows = []
    for index, face in enumerate(record["faces"]):
        expression = face.get("expression") or {"label": "", "probabilities": {}}
        pose = face.get("pose") or {}
        rows.append([
            *image, index, face.get("track_id", ""), *face["box"], face["score"],
            face.get("found_by", ""), expression["label"], _csv_flag(face.get("reliable")),
            *(pose.get(angle, "") for angle in ("yaw", "pitch", "roll")), "",
            *(expression["probabilities"].get(c, "") for c in classes),
        ])  # fmt: skip
    if not rows:
        face_columns = len(CSV_COLUMNS) - len(image) - 1  # face .. roll
        rows.append([*image, *[""] * face_columns, record["error"] or "", *[""] * len(classes)])
    return [[_csv_cell(cell) for cell in row] for row in rows]


class RecordWriter:
    """Writes records to ``--json`` (one document, written at close), ``--jsonl`` (one line per
    record, flushed as it comes) and/or ``--csv`` (:func:`_csv_rows`: one row per face, or one
    per image without faces); ``echo`` prints a one-line summary per readable
    image to stdout (errors are logged). Each file is opened (truncated) here, and ``-`` means
    standard output. Use as a context manager."""

    def __init__(
        self,
        json_path: Path | None,
        jsonl_path: Path | None,
        header: dict[str, Any],
        echo: bool = False,
        csv_path: Path | None = None,
        classes: Sequence[str] = (),
    ) -> None:
        self.json_path = json_path
        self.header = {"schema_version": SCHEMA_VERSION, **header}
        self.records: list[dict[str, Any]] = []
        self._streams = contextlib.ExitStack()
        self._echo = self._open(STDOUT) if echo else None
        self._json = None if json_path is None else self._open(json_path)
        self._jsonl = None if jsonl_path is None else self._open(jsonl_path)
        self._csv: IO[str] | None = None
        if csv_path is not None:
            self._csv = self._open(csv_path, newline="")
            self._csv_writer = csv.writer(self._csv)
            self._csv_writer.writerow([*CSV_COLUMNS, *(f"p_{c}" for c in classes)])
            self._classes = list(classes)

    def _open(self, path: Path, newline: str | None = None) -> IO[str]:
        """A UTF-8 text stream to ``path`` (its folders made), or to standard output for
        :data:`~keyfer.io.outputs.STDOUT` (left open at close). Characters UTF-8 cannot hold,
        the surrogate escapes of file names that are not UTF-8, are written as ``\\udcXX``."""
        if path == STDOUT:
            stream = io.TextIOWrapper(
                sys.stdout.buffer, "utf-8", "backslashreplace", newline, write_through=True
            )
            self._streams.callback(stream.detach)
            return stream
        path.parent.mkdir(parents=True, exist_ok=True)
        return self._streams.enter_context(
            path.open("w", encoding="utf-8", errors="backslashreplace", newline=newline)
        )

    def __enter__(self) -> RecordWriter:
        return self

    def write(self, record: dict[str, Any]) -> None:
        if self._echo is not None and record["error"] is None:
            print(f"{record['path']}: {_summary(record['faces'])}", file=self._echo, flush=True)
        if self.json_path is not None:
            self.records.append(record)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        if self._csv is not None:
            self._csv_writer.writerows(_csv_rows(record, self._classes))
            self._csv.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._streams:
            if self._json is not None:
                self._json.write(json.dumps({**self.header, "records": self.records}) + "\n")
