"""JSON records of keyfer's outputs (schema version 1) and the writers that stream them.

An image record is ``{"path", "width", "height", "faces": [...], "error"}``; each face is
``{"box", "score", "presence", "keypoints6", "landmarks68", "mesh"}``. Coordinates are original
image pixels after EXIF rotation, a pixel's centre at integer + 0.5; mesh z is in x's pixel scale.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import torch

from keyfer.faces.pipeline import Faces

SCHEMA_VERSION = 1
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
    "label",
)
_COORD_DECIMALS = 2
_SCORE_DECIMALS = 4


def _rounded(values: torch.Tensor, decimals: int) -> Any:
    # numpy rounds and converts to lists about 5x faster than torch.
    return np.round(values.double().numpy(), decimals).tolist()


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


def face_records(faces: Faces) -> list[dict[str, Any]]:
    """One JSON-ready dict per face, in the order of ``faces``."""
    with _cyclic_gc_paused():
        columns = {
            "box": _rounded(faces.boxes, _COORD_DECIMALS),
            "score": _rounded(faces.scores, _SCORE_DECIMALS),
            "presence": _rounded(faces.presence, _SCORE_DECIMALS),
            "keypoints6": _rounded(faces.keypoints6, _COORD_DECIMALS),
            "landmarks68": _rounded(faces.landmarks68, _COORD_DECIMALS),
            "mesh": _rounded(faces.mesh, _COORD_DECIMALS),
        }
        return [
            dict(zip(columns, values, strict=True))
            for values in zip(*columns.values(), strict=True)
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


class RecordWriter:
    """Writes records to ``--json`` (one document, written at close), ``--jsonl`` (one line per
    record, flushed as it comes) and/or ``--csv`` (one row per face: :data:`CSV_COLUMNS`, then
    ``p_<class>`` per class); ``echo`` prints a one-line summary per readable
    image to stdout (errors are logged). Use as a context manager."""

    def __init__(
        self,
        json_path: Path | None,
        jsonl_path: Path | None,
        header: dict[str, Any],
        echo: bool = False,
        csv_path: Path | None = None,
        classes: list[str] = (),
    ) -> None:
        self.json_path = json_path
        self.echo = echo
        self._csv: IO[str] | None = None
        if csv_path is not None:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            self._csv = csv_path.open("w", encoding="utf-8", newline="")
            self._csv_writer = csv.writer(self._csv)
            self._csv_writer.writerow([*CSV_COLUMNS, *(f"p_{c}" for c in classes)])
            self._classes = list(classes)
        self.header = {"schema_version": SCHEMA_VERSION, **header}
        self.records: list[dict[str, Any]] = []
        self._jsonl: IO[str] | None = None
        if jsonl_path is not None:
            jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = jsonl_path.open("w", encoding="utf-8")

    def __enter__(self) -> RecordWriter:
        return self

    def write(self, record: dict[str, Any]) -> None:
        if self.echo and record["error"] is None:
            print(f"{record['path']}: {_summary(record['faces'])}", flush=True)
        if self.json_path is not None:
            self.records.append(record)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        if self._csv is not None:
            for index, face in enumerate(record["faces"]):
                expression = face.get("expression") or {"label": "", "probabilities": {}}
                probabilities = [expression["probabilities"].get(c, "") for c in self._classes]
                self._csv_writer.writerow([
                    record["path"], record.get("frame", ""), record.get("time_s", ""), index,
                    face.get("track_id", ""), *face["box"], face["score"], expression["label"],
                    *probabilities,
                ])  # fmt: skip
            self._csv.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for stream in (self._jsonl, self._csv):
            if stream is not None:
                stream.close()
        if self.json_path is not None:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            document = {**self.header, "records": self.records}
            self.json_path.write_text(json.dumps(document) + "\n", encoding="utf-8")
