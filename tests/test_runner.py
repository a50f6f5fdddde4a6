"""run_images: batches of images, records in input order, and per-item errors."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keyfer.errors import KeyferError
from keyfer.io.records import RecordWriter, face_records
from keyfer.runner import run_images


def _write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir()
    for index, name in enumerate(names):
        path = folder / name
        if name.startswith("corrupt"):
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(np.full((8, 8 + index, 3), index, np.uint8)).save(path)


def _run(folder: Path, describe, batch_images: int) -> list[dict]:
    records: list[dict] = []

    class Collect(RecordWriter):
        def write(self, record: dict) -> None:
            records.append(record)

    with Collect(None, None, {"keyfer_version": "test", "model": None}, echo=False) as writer:
        summary = run_images([folder], describe, writer, batch_images=batch_images)
    assert summary.images == len(records)
    return records


def _widths(images, paths, annotate):
    return [([{"width": image.shape[1]}], None) for image in images]


def test_records_keep_input_order_with_errors_between_batches(tmp_path):
    names = ["a.png", "b.png", "corrupt1.png", "d.png", "e.png", "corrupt2.png", "g.png"]
    _write_images(tmp_path / "in", names)
    for batch_images in (1, 2, 16):
        records = _run(tmp_path / "in", _widths, batch_images)
        assert [Path(r["path"]).name for r in records] == sorted(names)
        errors = [Path(r["path"]).name for r in records if r["error"]]
        assert errors == ["corrupt1.png", "corrupt2.png"]
        assert all(r["faces"] == [{"width": r["width"]}] for r in records if not r["error"])


def test_a_failing_batch_is_retried_image_by_image(tmp_path):
    _write_images(tmp_path / "in", ["a.png", "b.png", "c.png"])

    def describe(images, paths, annotate):
        if any(p.name == "b.png" for p in paths):
            raise KeyferError(f"cannot process {paths[0].name}")
        return _widths(images, paths, annotate)

    records = _run(tmp_path / "in", describe, batch_images=16)
    assert [bool(r["error"]) for r in records] == [False, True, False]
    assert records[1]["error"] == "cannot process b.png"


def test_face_records_round_and_leave_the_garbage_collector_as_it_was(pipeline, astronaut):
    faces = pipeline(astronaut)
    (record,) = face_records(faces)
    assert record["box"] == pytest.approx(faces.boxes[0].tolist(), abs=0.005)
    assert len(record["mesh"]) == 468
    gc.disable()
    try:
        face_records(faces)
        assert not gc.isenabled()
    finally:
        gc.enable()
    face_records(faces)
    assert gc.isenabled()
