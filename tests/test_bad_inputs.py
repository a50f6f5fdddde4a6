"""Bad input, end to end: every case a user can hand keyfer, in one module a reader can scan.

Each case gets one clear error line or a per-item error record, never a traceback, never a
silently wrong answer, and one bad file never loses the results of the others. Crashes that
would take the interpreter down (a segfault in OpenCV) are tested in a subprocess.

Sections, in order:

1. A folder of every bad input, end to end.
2. Outputs: unwritable, overwritten, non-UTF-8 names, stdout, the progress bar and the summary.
3. CSV and drawings: formulas in cells, error rows, labels at edges, the ``--explain`` overlay.
4. Models and the ONNX cache: export keys, a broken cache, shadowed names, damaged checkpoints.
5. Video: non-UTF-8 names, damaged streams, no frames, frame rate, the tiling default.
6. Faces: memory for huge images, duplicate boxes from tiling, one face set.
7. Data rows, configs, images, devices: bad list-file rows, bad configs, image ranges,
   devices and files that are not regular files.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageFile

import keyfer
from keyfer import export, runner
from keyfer.api import ExpressionRecognizer
from keyfer.cli import main
from keyfer.data.affectnet import load_affectnet
from keyfer.data.fer2013 import load_fer2013
from keyfer.data.ferplus import load_ferplus
from keyfer.data.labels import CLASSES
from keyfer.data.rafdb import load_rafdb
from keyfer.device import resolve_device
from keyfer.errors import ImageReadError, KeyferError
from keyfer.faces.detector import FaceDetector
from keyfer.faces.nms import holds_better
from keyfer.faces.pipeline import FacePipeline
from keyfer.geometry import intersection_areas
from keyfer.io.annotate import draw_faces
from keyfer.io.images import decoded_nbytes, read_image, to_rgb_array
from keyfer.io.records import RecordWriter, image_record
from keyfer.io.video import VideoSource
from keyfer.models.registry import create_model, get_record
from keyfer.predict import PredictJob, draw_importance
from keyfer.results import Face
from keyfer.runner import _decoded_ahead, run_images
from keyfer.train.cached import build_head
from keyfer.train.checkpoint import save_checkpoint
from keyfer.train.config import Experiment, load_experiment, shipped_configs
from tests import dataset_fixtures
from tests.conftest import EXAMPLE, ROOT, needs_real_data, real_data

# --- Shared: a cheap model, and videos written under any name ----------------------------------

FPS = 10.0
"""The frame rate of every video these tests write."""


def write_random_head(path: Path, seed: int) -> Path:
    """A cheap checkpoint at ``path``: the default architecture with a head drawn from ``seed``."""
    experiment = Experiment(name="random-head")
    torch.manual_seed(seed)
    state = {"head": build_head(experiment.model).state_dict(), "epoch": 0}
    save_checkpoint(path, experiment, state)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A cheap expression model: the default architecture with a random head (seed 0)."""
    return write_random_head(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt", seed=0)


def _write_video(path: str | bytes | Path, frames: list[np.ndarray], fourcc: str = "MJPG") -> None:
    """Write RGB frames at :data:`FPS` (``path`` may be bytes, for names that are not UTF-8)."""
    height, width = frames[0].shape[:2]
    ascii_path = Path(os.fsdecode(path)).with_name("writing" + Path(os.fsdecode(path)).suffix)
    writer = cv2.VideoWriter(str(ascii_path), cv2.VideoWriter_fourcc(*fourcc), FPS, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    os.rename(ascii_path, path)


# --- 1. A folder of every bad input, end to end ---------------------------------------------------


def run_keyfer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m keyfer ARGS`` in a subprocess, so that a crash cannot take pytest with it."""
    return subprocess.run(
        [sys.executable, "-m", "keyfer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=900,  # a guard against a hang (e.g. reading a FIFO), not a speed bound
    )


def _mixed_folder(root: Path) -> tuple[list[str], int]:
    """A folder holding every kind of bad input beside good ones; returns the input paths
    (relative to ``root``'s parent) and how many of them are videos."""
    face = np.asarray(Image.open(EXAMPLE).convert("RGB").resize((256, 256)))
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(face).save(root / "good.png")
    Image.fromarray(face).save(root / "same.jpg")  # same stem as same.png
    Image.fromarray(face).save(root / "same.png")
    Image.fromarray(face).save(root / "a" / "x.jpg")  # same name in two folders
    Image.fromarray(face).save(root / "b" / "x.jpg")
    Image.fromarray(face).convert("L").save(root / "gray.png")
    Image.fromarray(face).convert("RGBA").save(root / "rgba.png")
    Image.fromarray(face[..., 0].astype(np.float32)).save(root / "float.tif")  # values 0-255
    Image.fromarray(face).save(os.fsencode(root) + b"/bad\xff.png")  # not valid UTF-8
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "no_face.png")
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    (root / "truncated.jpg").write_bytes((root / "same.jpg").read_bytes()[:300])
    os.mkfifo(root / "fifo.png")
    (root / "loop.png").symlink_to("loop.png")
    (root / "broken.png").symlink_to("missing.png")
    frames = [np.roll(face, 4 * shift, axis=1) for shift in range(3)]
    _write_video(root / "clip.avi", frames)
    (root / "clip.mp4").write_bytes((root / "clip.avi").read_bytes())  # same stem, other suffix
    writer = cv2.VideoWriter(str(root / "zero.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    writer.release()  # a video with no frame
    (root / "notes.txt").write_text("skipped: not an image")
    inputs = sorted(
        os.fsdecode(path.relative_to(root.parent))
        for path in root.rglob("*")
        if path.suffix != ".txt" and (path.is_symlink() or not path.is_dir())
    )
    return inputs, 3


def test_a_folder_of_every_bad_input_gives_a_record_per_input_and_distinct_outputs(
    checkpoint, tmp_path
):
    """`keyfer predict` on a folder mixing good and bad files with every output asked for:
    exit 1, no crash, a record per input (per frame for videos), one output file per input."""
    inputs, _ = _mixed_folder(tmp_path / "mix")
    result = run_keyfer(
        "predict", "mix", "--model", str(checkpoint), "--no-tiling",
        "--json", "out/all.json", "--jsonl", "out/all.jsonl", "--csv", "out/all.csv",
        "--annotate", "out/ann", "--save-crops", "out/crops",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    records = json.loads((tmp_path / "out" / "all.json").read_text())["records"]
    lines = (tmp_path / "out" / "all.jsonl").read_text().splitlines()
    assert len(lines) == len(records)
    by_path: dict[str, list[dict]] = {}
    for record in records:
        by_path.setdefault(record["path"], []).append(record)
    assert sorted(by_path) == inputs
    for path in ("mix/good.png", "mix/same.jpg", "mix/same.png", "mix/a/x.jpg", "mix/b/x.jpg",
                 "mix/gray.png", "mix/rgba.png", "mix/float.tif", "mix/bad\udcff.png"):  # fmt: skip
        (record,) = by_path[path]
        assert record["error"] is None and len(record["faces"]) == 1, record
    for path in ("mix/empty.png", "mix/text.jpg", "mix/truncated.jpg", "mix/fifo.png",
                 "mix/loop.png", "mix/broken.png", "mix/zero.avi"):  # fmt: skip
        assert [r["error"] is not None for r in by_path[path]] == [True], path
    assert by_path["mix/no_face.png"][0]["faces"] == []
    for video in ("mix/clip.avi", "mix/clip.mp4"):
        assert [r["frame"] for r in by_path[video]] == [0, 1, 2]
    readable_images = 10
    annotated = [p for p in (tmp_path / "out" / "ann").rglob("*") if p.is_file()]
    assert len(annotated) == readable_images + 2  # each readable image and each video
    crops = [p for p in (tmp_path / "out" / "crops").rglob("*") if p.is_file()]
    assert len(crops) == 9 + 6  # one face in 9 images, and in each of 6 video frames


# --- 2. Outputs: unwritable, overwritten, non-UTF-8 names, stdout ---------------------------------
# Bad inputs on the output side of `keyfer predict`, `keyfer landmarks` and `keyfer export`: file
# names that are not UTF-8, outputs that cannot be written, outputs that would overwrite each other,
# usage errors that must not touch existing files, `-` for stdout, the progress bar and the end
# summary.


@pytest.fixture(scope="module")
def face_256() -> np.ndarray:
    """The example face at 256 x 256, RGB."""
    return np.asarray(Image.open(EXAMPLE).convert("RGB").resize((256, 256)))


def _save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def _invoke(*args: object) -> tuple[int, str]:
    """Run the CLI in-process; a traceback (an exception other than SystemExit) fails."""
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_non_utf8_file_name_gives_every_output_without_a_crash(checkpoint, tmp_path):
    """A file name that is not UTF-8 (a lone surrogate in Python) with --annotate, --save-crops,
    --csv, --jsonl and --json: OpenCV used to crash (exit 139) and the CSV writer raised."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(EXAMPLE.read_bytes())
    try:
        (Path(os.fsdecode(os.fsencode(folder) + b"/bad\xff.png"))).write_bytes(EXAMPLE.read_bytes())
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    outputs = ["--annotate", "ann", "--save-crops", "crops", "--csv", "out.csv"]
    outputs += ["--jsonl", "out.jsonl", "--json", "out.json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.run(
        [sys.executable, "-m", "keyfer.cli", "predict", "in", "--model", str(checkpoint),
         *outputs],
        cwd=tmp_path, env=env, capture_output=True, text=True, errors="replace",
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    records = json.loads((tmp_path / "out.json").read_text())["records"]
    assert [Path(r["path"]).name for r in records] == ["a.png", "bad\udcff.png"]
    assert all(len(r["faces"]) == 1 for r in records)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
    rows = list(csv.DictReader((tmp_path / "out.csv").open(encoding="utf-8")))
    assert [Path(row["path"]).name for row in rows] == ["a.png", "bad\\udcff.png"]
    assert _files(tmp_path / "ann") == ["a.png.jpg", "bad\\xff.png.jpg"]
    assert _files(tmp_path / "crops") == ["a.png_face0.png", "bad\\xff.png_face0.png"]


def test_non_utf8_file_name_in_csv_is_escaped_and_the_run_goes_on(checkpoint, tmp_path):
    """--csv alone with a file name that is not UTF-8: it used to raise UnicodeEncodeError and
    lose the rest of the folder; the name is written with a backslash escape."""
    folder = tmp_path / "in"
    folder.mkdir()
    try:
        Path(os.fsdecode(os.fsencode(folder) + b"/a\xff.png")).write_bytes(EXAMPLE.read_bytes())
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    (folder / "b.png").write_bytes(EXAMPLE.read_bytes())
    out = tmp_path / "out.csv"
    code, output = _invoke("predict", folder, "--model", checkpoint, "--no-tiling", "--csv", out)
    assert code == 0, output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [Path(row["path"]).name for row in rows] == ["a\\udcff.png", "b.png"]


def test_non_utf8_file_name_in_the_per_image_lines_on_a_strict_terminal(tmp_path):
    """The per-image lines on stdout with a file name that is not UTF-8, where stdout refuses
    surrogates (a UTF-8 locale other than C.UTF-8): the name is escaped, the run goes on."""
    try:
        (Path(os.fsdecode(os.fsencode(tmp_path) + b"/a\xff.png"))).write_bytes(EXAMPLE.read_bytes())
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env["PYTHONIOENCODING"] = "utf-8:strict"
    process = subprocess.run(
        [sys.executable, "-m", "keyfer.cli", "landmarks", ".", "--no-tiling"],
        cwd=tmp_path, env=env, capture_output=True, text=True, errors="replace",
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    assert process.stdout == "a\\udcff.png: 1 faces\n"


@pytest.mark.parametrize("option", ["--json", "--jsonl", "--csv", "--annotate", "--save-crops"])
def test_unwritable_predict_output_is_a_usage_error_before_any_image(checkpoint, tmp_path, option):
    """An output below a regular file (unwritable even for root): exit 2 and one line, before
    the first image is read, and no other output is created."""
    (tmp_path / "a_file").write_text("")
    args = ["predict", EXAMPLE, "--model", checkpoint, option, tmp_path / "a_file" / "out"]
    if option != "--jsonl":
        args += ["--jsonl", tmp_path / "other.jsonl"]
    code, output = _invoke(*args)
    assert code == 2
    assert re.fullmatch(r"Error: cannot write .*a_file is not a folder\n", output)
    assert not (tmp_path / "other.jsonl").exists()


def test_unwritable_landmarks_output_is_a_usage_error(tmp_path):
    """`keyfer landmarks --json` below a regular file: exit 2 before any image."""
    (tmp_path / "a_file").write_text("")
    code, output = _invoke("landmarks", EXAMPLE, "--json", tmp_path / "a_file" / "out.json")
    assert code == 2 and "a_file is not a folder" in output


def test_unwritable_export_output_is_a_usage_error(checkpoint, tmp_path):
    """`keyfer export` to a path below a regular file: exit 2, one line, no traceback."""
    (tmp_path / "a_file").write_text("")
    code, output = _invoke("export", tmp_path / "a_file" / "m.onnx", "--model", checkpoint)
    assert code == 2 and "a_file is not a folder" in output


def test_an_annotation_that_cannot_be_written_is_an_error_record(tmp_path, face_256):
    """One annotated copy that cannot be written mid-run (its name is taken by a folder):
    that image's record carries the error and keeps its faces; the others are written."""
    folder = tmp_path / "in"
    for name in ("a.png", "b.png", "c.png"):
        _save(folder / name, face_256)
    for blocked in ("b.jpg", "b.png.jpg"):  # the copy's name before and after the fix
        (tmp_path / "ann" / blocked).mkdir(parents=True)
    code, _ = _invoke(
        "landmarks", folder, "--no-tiling", "--annotate", tmp_path / "ann", "--json",
        tmp_path / "out.json",
    )  # fmt: skip
    assert code == 1
    records = json.loads((tmp_path / "out.json").read_text())["records"]
    assert [bool(r["error"]) for r in records] == [False, True, False]
    assert "annotated copy" in records[1]["error"] and len(records[1]["faces"]) == 1
    assert (tmp_path / "ann" / "c.png.jpg").is_file()


def test_annotations_and_crops_keep_folders_and_suffixes(checkpoint, tmp_path, face_256):
    """x.jpg and x.png in one folder, and x.jpg in another, outside the working folder: each
    gets its own annotated copy and crop (they used to overwrite each other)."""
    inputs = tmp_path / "in"
    for name in ("a/x.jpg", "a/x.png", "b/x.jpg"):
        _save(inputs / name, face_256)
    code, output = _invoke(
        "predict", inputs / "a", inputs / "b", "--model", checkpoint, "--no-tiling",
        "--annotate", tmp_path / "ann", "--save-crops", tmp_path / "crops",
    )  # fmt: skip
    assert code == 0, output
    assert _files(tmp_path / "ann") == ["a/x.jpg.jpg", "a/x.png.jpg", "b/x.jpg.jpg"]
    assert _files(tmp_path / "crops") == [
        "a/x.jpg_face0.png", "a/x.png_face0.png", "b/x.jpg_face0.png"
    ]  # fmt: skip


def test_an_image_named_twice_never_replaces_its_first_annotation(tmp_path, face_256):
    """The same image given twice: the second copy gets a counter instead of replacing the
    first one written by this run."""
    image = _save(tmp_path / "x.png", face_256)
    code, _ = _invoke("landmarks", image, image, "--no-tiling", "--annotate", tmp_path / "ann")
    assert code == 0
    assert _files(tmp_path / "ann") == ["x.png-2.jpg", "x.png.jpg"]


def test_annotations_never_replace_an_input(tmp_path, face_256):
    """Annotating into the input folder, where x.png.jpg is itself an input: it is kept."""
    folder = tmp_path / "in"
    _save(folder / "x.png", face_256)
    _save(folder / "x.png.jpg", face_256)
    before = (folder / "x.png.jpg").read_bytes()
    code, _ = _invoke("landmarks", folder, "--no-tiling", "--annotate", folder)
    assert code == 0
    assert (folder / "x.png.jpg").read_bytes() == before
    assert {"x.png-2.jpg", "x.png.jpg.jpg"} <= set(_files(folder))


def test_a_record_file_that_is_an_input_or_another_output_is_a_usage_error(tmp_path):
    """--json naming an input image, or --json and --jsonl naming one file: exit 2, and the
    input is untouched."""
    image = tmp_path / "x.png"
    image.write_bytes(EXAMPLE.read_bytes())
    code, output = _invoke("landmarks", image, "--json", image)
    assert code == 2 and "is an input" in output
    assert image.read_bytes() == EXAMPLE.read_bytes()
    out = tmp_path / "out.json"
    code, output = _invoke("landmarks", image, "--json", out, "--jsonl", out)
    assert code == 2 and "--json and --jsonl both write" in output


def test_export_that_would_overwrite_itself_with_its_record_is_a_usage_error(tmp_path):
    """`keyfer export m.json` would write the model and its .json record to one file."""
    code, output = _invoke("export", tmp_path / "m.json")
    assert code == 2 and "both write" in output


def test_videos_with_one_stem_get_one_annotated_video_each(checkpoint, tmp_path, face_256):
    """v.mp4 and v.avi with --annotate: two annotated videos (there used to be one v.mp4)."""
    _write_video(tmp_path / "v.mp4", [face_256] * 2, "mp4v")
    _write_video(tmp_path / "v.avi", [face_256] * 2, "MJPG")
    code, output = _invoke(
        "predict", tmp_path / "v.mp4", tmp_path / "v.avi", "--model", checkpoint,
        "--annotate", tmp_path / "ann",
    )  # fmt: skip
    assert code == 0, output
    assert _files(tmp_path / "ann") == ["v.avi.mp4", "v.mp4.mp4"]
    assert "2 videos" in output


def test_a_usage_error_leaves_existing_outputs_untouched(checkpoint, tmp_path):
    """A folder without images (a usage error, exit 2) with --json, --jsonl and --csv naming
    existing files: the files keep their content."""
    (tmp_path / "empty").mkdir()
    outputs = {name: tmp_path / name for name in ("out.json", "out.jsonl", "out.csv")}
    for path in outputs.values():
        path.write_text("earlier results\n")
    code, _ = _invoke(
        "predict", tmp_path / "empty", "--model", checkpoint, "--json", outputs["out.json"],
        "--jsonl", outputs["out.jsonl"], "--csv", outputs["out.csv"],
    )  # fmt: skip
    assert code == 2
    assert all(path.read_text() == "earlier results\n" for path in outputs.values())


def test_dash_writes_jsonl_and_csv_to_stdout(checkpoint, tmp_path, monkeypatch):
    """--jsonl - and --csv - write to stdout (no file named -), without the per-image lines."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["predict", str(EXAMPLE), "--model", str(checkpoint), "--no-tiling"]
    result = runner.invoke(main, [*args, "--jsonl", "-"])
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["path"] == str(EXAMPLE)
    result = runner.invoke(main, ["landmarks", str(EXAMPLE), "--no-tiling", "--jsonl", "-"])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1
    result = runner.invoke(main, [*args, "--csv", "-"])
    assert result.exit_code == 0, result.output
    header, row = list(csv.reader(io.StringIO(result.stdout)))
    assert header[0] == "path" and row[0] == str(EXAMPLE)
    assert not (tmp_path / "-").exists()


def test_python_dash_m_keyfer_runs_the_command_line():
    """`python -m keyfer` is the keyfer command."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.run(
        [sys.executable, "-m", "keyfer", "--version"], env=env, capture_output=True, text=True
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith("keyfer, version")


def test_summary_says_where_each_output_went(tmp_path, monkeypatch):
    """The end summary on stderr names each output's destination."""
    monkeypatch.chdir(tmp_path)  # where an old keyfer would create a file named -
    code, output = _invoke(
        "landmarks", EXAMPLE, "--no-tiling", "--json", tmp_path / "o.json", "--jsonl", "-",
        "--annotate", tmp_path / "ann",
    )  # fmt: skip
    assert code == 0
    summary = output.splitlines()[-1]
    assert f"--json: {tmp_path / 'o.json'}" in summary
    assert "--jsonl: stdout" in summary and f"--annotate: {tmp_path / 'ann'}" in summary


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal, so that tqdm draws its bar."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_counts_files_and_log_lines_do_not_print_into_it(tmp_path, monkeypatch):
    """The bar's unit is a file (a video is not an 'img'), and an error logged during the run
    gets a line of its own instead of being glued to the bar."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not an image")
    Image.new("RGB", (8, 8)).save(folder / "b.png")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    handler = logging.StreamHandler(terminal)
    logging.getLogger().addHandler(handler)
    try:
        with RecordWriter(None, None, {}) as writer:
            run_images([folder], lambda images, paths, annotate: [([], None)] * len(images), writer)
    finally:
        logging.getLogger().removeHandler(handler)
    output = terminal.getvalue()
    assert "file/s]" in output
    chunks = re.split(r"[\r\n]", output)
    assert any(chunk.startswith("cannot read image") for chunk in chunks), output


# --- 3. CSV and drawings: formulas, error rows, labels, --explain ---------------------------------
# Bad inputs for ``--csv`` and ``--annotate``: spreadsheet formulas in text cells, images with
# errors or no faces, labels at the image's edges or next to each other, unreliable faces, and the
# ``--explain`` overlay on small faces.

GREEN, AMBER = (0, 255, 0), (255, 176, 0)  # the boxes of reliable and unreliable faces
LABEL = "happiness 0.91"


def _csv_rows(tmp_path, records, classes=("happiness",)) -> list[dict[str, str]]:
    path = tmp_path / "out.csv"
    with RecordWriter(None, None, {}, csv_path=path, classes=list(classes)) as writer:
        for record in records:
            writer.write(record)
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def _face_record(box, label="happiness", reliable=True) -> dict:
    return {
        "box": box,
        "score": 0.9,
        "expression": {"label": label, "probabilities": {"happiness": 0.9}},
        "pose": {"yaw": -12.5, "pitch": 3.0, "roll": -1.25},
        "reliable": reliable,
    }


def test_csv_text_cells_starting_with_a_formula_are_escaped_but_numbers_are_not(tmp_path):
    """Paths and labels starting with =, +, -, @ become text; negative coordinates stay numbers."""
    faces = [_face_record([-3.5, -2.0, 40.0, 50.0], label="@SUM(A1)")]
    records = [
        image_record('=HYPERLINK("http://x","y").jpg', 64, 64, faces),
        image_record("+1+2.png", 64, 64, faces),
        image_record("-5", 64, 64, faces),
    ]
    formula_row, plus_row, numeric_path_row = _csv_rows(tmp_path, records)
    assert formula_row["path"] == '\'=HYPERLINK("http://x","y").jpg'
    assert formula_row["label"] == "'@SUM(A1)"
    assert (formula_row["x0"], formula_row["y0"], formula_row["yaw"]) == ("-3.5", "-2.0", "-12.5")
    assert plus_row["path"] == "'+1+2.png"
    assert numeric_path_row["path"] == "-5"


def test_csv_has_reliable_pose_and_error_columns_and_a_row_for_every_input(tmp_path):
    """An unreadable image and an image without faces each get one row; faces get reliable/pose."""
    records = [
        image_record("faces.jpg", 64, 64, [_face_record([1, 2, 30, 40], reliable=False)]),
        image_record("broken.jpg", error="-cannot decode broken.jpg"),
        image_record("empty.jpg", 64, 64),
    ]
    face_row, error_row, empty_row = _csv_rows(tmp_path, records)
    assert {"reliable", "yaw", "pitch", "roll", "error"} <= set(face_row)
    assert face_row["reliable"] == "false" and face_row["face"] == "0"
    assert (face_row["pitch"], face_row["roll"], face_row["error"]) == ("3.0", "-1.25", "")
    assert error_row["path"] == "broken.jpg" and error_row["error"] == "'-cannot decode broken.jpg"
    assert empty_row["path"] == "empty.jpg" and empty_row["error"] == ""
    for row in (error_row, empty_row):
        assert row["face"] == row["x0"] == row["label"] == row["p_happiness"] == ""


def _geometry(boxes: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic (N, 4) boxes, (N, 68, 2) landmarks and (N, 6, 2) keypoints, the points all at
    the box centres."""
    box_array = np.array(boxes, np.float32).reshape(-1, 4)
    centres = (box_array[:, None, :2] + box_array[:, None, 2:]) / 2
    return box_array, centres.repeat(68, axis=1), centres.repeat(6, axis=1)


def _mask(image: np.ndarray, colour, tolerance: int = 8) -> np.ndarray:
    """1 where a pixel is ``colour``, give or take ``tolerance`` (antialiased lines need ~40)."""
    return (np.abs(image.astype(int) - colour).max(axis=-1) <= tolerance).astype(np.uint8)


def _filled_rects(image: np.ndarray, colour) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of the filled areas of ``colour`` (label backgrounds, not thin lines)."""
    opened = cv2.morphologyEx(_mask(image, colour), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(opened)
    return [
        (int(x), int(y), int(x + w), int(y + h))
        for x, y, w, h, _ in stats[1:count]
        if w >= 20 and h >= 5
    ]


def _text_width(text: str) -> int:
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0]


@pytest.mark.parametrize(
    "box",
    [[10, 1, 50, 50], [165, 40, 199, 90], [-4, 30, 30, 80], [60, 70, 100, 119]],
    ids=["top", "right", "left", "bottom"],
)
def test_label_of_a_face_at_the_edge_is_inside_the_image_on_a_background(box):
    """The label's filled background is as wide as its text and lies inside the image."""
    canvas = draw_faces(np.zeros((120, 200, 3), np.uint8), *_geometry([box]), labels=[LABEL])
    (label,) = _filled_rects(canvas, GREEN)
    assert label[2] - label[0] >= _text_width(LABEL)
    assert 0 <= label[0] and label[2] <= 200 and 0 <= label[1] and label[3] <= 120
    _, y0, x1, y1 = box
    box_side = _mask(canvas, GREEN, 40)[y0 + 15 : y1 - 15, x1 - 2 : x1 + 1]
    assert box_side.any(axis=1).all()


def test_labels_of_neighbouring_faces_do_not_overlap():
    """Faces side by side and above, labels wider than the faces: no label covers another."""
    faces = _geometry([[20, 50, 60, 100], [70, 50, 110, 100], [40, 0, 80, 30]])
    canvas = draw_faces(
        np.zeros((160, 200, 3), np.uint8), *faces, labels=[LABEL] * 3, reliable=[True, False, True]
    )
    green, amber = _filled_rects(canvas, GREEN), _filled_rects(canvas, AMBER)
    assert len(green) == 2 and len(amber) == 1
    labels = green + amber
    assert all(x1 - x0 >= _text_width(LABEL) for x0, _, x1, _ in labels)  # none partly covered
    for index, a in enumerate(labels):
        for b in labels[index + 1 :]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])


def _result(box: list[float], reliable: bool, importance: np.ndarray | None = None) -> Face:
    """A synthetic happy face in ``box``, its points all at the box's centre."""
    (box_array,), (landmarks,), (keypoints,) = _geometry([box])
    mesh = np.concatenate([landmarks[:1].repeat(468, axis=0), np.zeros((468, 1))], axis=1)
    pose = {"yaw": 0.0, "pitch": 0.0, "roll": 0.0}
    return Face(
        box_array, 1.0, 1.0, keypoints, landmarks, mesh, "happiness", {"happiness": 0.9},
        importance, pose, reliable,
    )  # fmt: skip


def test_unreliable_faces_are_drawn_in_another_colour():
    """``PredictJob.draw`` marks a face with "reliable": false: amber, not green."""
    job = PredictJob(recognizer=None, writer=None)
    faces = [_result([20, 20, 80, 90], True), _result([220, 20, 280, 90], False)]
    canvas = job.draw(np.zeros((120, 320, 3), np.uint8), faces)
    green, amber = _mask(canvas, GREEN), _mask(canvas, AMBER)
    assert green[:, :160].sum() > 100 and not green[:, 160:].any()
    assert amber[:, 160:].sum() > 100 and not amber[:, :160].any()


@pytest.fixture(scope="module")
def face_55px(astronaut, pipeline_no_tiling):
    """The astronaut scaled so that her face is 55 px wide: (image, landmarks68, box)."""
    faces = pipeline_no_tiling(astronaut)
    scale = 55 / float(faces.boxes[0, 2] - faces.boxes[0, 0])
    image = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image, faces.landmarks68[0].numpy() * scale, faces.boxes[0].numpy() * scale


def test_explain_overlay_keeps_a_55px_face_recognisable(face_55px):
    """The heat map shows, but changes few pixels of the face's centre much."""
    image, points, box = face_55px
    importance = np.random.default_rng(0).uniform(0.2, 0.8, len(points))
    overlay = draw_importance(image, points, importance)
    x0, y0, x1, y1 = box.round().astype(int)
    quarter_x, quarter_y = (x1 - x0) // 4, (y1 - y0) // 4
    centre = np.s_[y0 + quarter_y : y1 - quarter_y, x0 + quarter_x : x1 - quarter_x]
    change = np.abs(overlay.astype(int) - image.astype(int))[centre].max(axis=-1)
    assert change.max() > 30  # the overlay is there
    assert (change > 40).mean() < 0.15 and change.mean() < 20


def test_explain_annotation_has_a_colour_bar_legend(face_55px):
    """``--explain`` drawings get a blue-to-red legend away from the face."""
    image, points, box = face_55px
    image = np.full_like(image, 128)  # no colours of its own
    mesh = np.zeros((468, 3), np.float32)
    mesh[:68, :2] = points
    face = replace(_result(box.tolist(), True, np.linspace(0, 1, 68)), mesh=mesh)
    recognizer = SimpleNamespace(model=SimpleNamespace(keypoint_index=torch.arange(68)))
    job = PredictJob(recognizer=recognizer, writer=None, explain=True)
    canvas = job.draw(image, [face])
    away = np.ones(canvas.shape[:2], bool)
    x0, y0, x1, y1 = box.round().astype(int)
    away[max(0, y0 - 40) : y1 + 40, max(0, x0 - 40) : x1 + 40] = False
    red, green, blue = (canvas[..., channel].astype(int) for channel in range(3))
    assert ((blue > 200) & (red < 60) & (green < 60) & away).any()  # low importance
    assert ((red > 200) & (blue < 60) & (green < 60) & away).any()  # high importance


# --- 4. Models and the ONNX cache -----------------------------------------------------------------
# Bad model inputs: checkpoints retrained in place or typed as the same relative path in two folders
# (the ONNX export cache), a broken export cache, a folder named like a shipped model, and damaged
# checkpoints.

needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None
    or importlib.util.find_spec("onnxscript") is None,
    reason="needs the onnx extra: pip install 'keyfer[onnx]' (the README's test command has it)",
)


def face_probabilities(recognizer: ExpressionRecognizer, image: np.ndarray) -> np.ndarray:
    """(n_classes,) probabilities of the one face in ``image``, in canonical class order."""
    (face,) = recognizer.predict(image)
    return np.array([face.probabilities[name] for name in CLASSES])


def test_checkpoint_retrained_in_place_gets_a_new_export_key(tmp_path):
    """A checkpoint overwritten with new weights must not reuse the old weights' ONNX export."""
    path = write_random_head(tmp_path / "checkpoint.pt", seed=0)
    before = create_model(path).info
    write_random_head(path, seed=1)
    after = create_model(path).info
    assert before.digest and after.digest and before.digest != after.digest
    keys = {export.crop_network_cache_path(m.name, m.digest) for m in (before, after)}
    assert len(keys) == 2


def test_same_relative_checkpoint_path_in_two_folders_gets_two_keys(tmp_path, monkeypatch):
    """``checkpoint.pt`` typed in two folders names two models, not one."""
    digests = []
    for seed, folder in enumerate(["a", "b"]):
        (tmp_path / folder).mkdir()
        write_random_head(tmp_path / folder / "checkpoint.pt", seed)
        monkeypatch.chdir(tmp_path / folder)
        info = create_model("checkpoint.pt").info
        assert info.name == "checkpoint.pt"
        digests.append(info.digest)
    assert all(digests) and digests[0] != digests[1]


def test_shipped_model_key_follows_its_weights_and_config():
    """New weights (or a new config) under a shipped model's name must not reuse its export."""
    record = get_record("keyfer-ferplus-fast")
    retrained = dataclasses.replace(record, sha256="0" * 64)
    reconfigured = dataclasses.replace(record, config={**record.config, "dropout": 0.5})
    assert len({record.digest, retrained.digest, reconfigured.digest}) == 3


def test_export_key_changes_with_keyfer_version(monkeypatch):
    """A new keyfer version must not reuse an export made by an older one."""
    crop, detector = export.crop_network_cache_path("m", "f" * 64), export.detector_cache_path()
    monkeypatch.setattr(keyfer, "__version__", "999.0")
    assert export.crop_network_cache_path("m", "f" * 64) != crop
    assert export.detector_cache_path() != detector


@needs_onnx
def test_onnx_backend_gives_each_checkpoint_its_own_predictions(tmp_path, monkeypatch, astronaut):
    """--backend onnx: ``checkpoint.pt`` typed in two folders, then one of them retrained in
    place, each predict like the torch backend on their own weights."""
    for seed, folder in enumerate(["a", "b"]):
        (tmp_path / folder).mkdir()
        write_random_head(tmp_path / folder / "checkpoint.pt", seed)
    monkeypatch.chdir(tmp_path / "a")
    first = face_probabilities(
        ExpressionRecognizer("checkpoint.pt", "cpu", backend="onnx"), astronaut
    )
    monkeypatch.chdir(tmp_path / "b")
    second = face_probabilities(
        ExpressionRecognizer("checkpoint.pt", "cpu", backend="onnx"), astronaut
    )
    second_torch = face_probabilities(ExpressionRecognizer("checkpoint.pt", "cpu"), astronaut)
    assert np.abs(second - first).max() > 0.01  # the two random heads disagree
    np.testing.assert_allclose(second, second_torch, atol=2e-3)

    shutil.copyfile(tmp_path / "b" / "checkpoint.pt", tmp_path / "a" / "checkpoint.pt")
    monkeypatch.chdir(tmp_path / "a")
    retrained = face_probabilities(
        ExpressionRecognizer("checkpoint.pt", "cpu", backend="onnx"), astronaut
    )
    np.testing.assert_allclose(retrained, second_torch, atol=2e-3)


def _dead_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(done.stdout)


@needs_onnx
def test_onnx_cache_survives_removed_partial_files_and_a_truncated_export(tmp_path, astronaut):
    """The cached exports are whole files: removing "partial" files breaks nothing, a truncated
    cached file is exported again, and partial files of dead exports are cleaned up."""
    checkpoint = str(write_random_head(tmp_path / "checkpoint.pt", seed=0))
    expected = face_probabilities(
        ExpressionRecognizer(checkpoint, "cpu", backend="onnx"), astronaut
    )
    cache = export.onnx_cache_dir()
    for partial in cache.glob("*partial*"):  # a user cleaning up what looks like leftovers
        partial.unlink()
    again = face_probabilities(ExpressionRecognizer(checkpoint, "cpu", backend="onnx"), astronaut)
    np.testing.assert_allclose(again, expected, atol=1e-5)

    orphan = cache / f"blazeface-0123456789abcdef.partial-{_dead_pid()}.onnx"
    orphan.write_bytes(b"killed mid-export")
    detector = export.detector_cache_path()
    detector.write_bytes(detector.read_bytes()[:1000])  # truncated
    recovered = face_probabilities(
        ExpressionRecognizer(checkpoint, "cpu", backend="onnx"), astronaut
    )
    np.testing.assert_allclose(recovered, expected, atol=1e-5)
    assert not orphan.exists()
    assert not list(cache.glob("*partial*"))


def test_folder_named_like_a_shipped_model_does_not_shadow_it(tmp_path, monkeypatch, caplog):
    """``mkdir keyfer-ferplus-fast`` in the working folder: the name still loads the shipped
    model (with a warning), and ``./keyfer-ferplus-fast`` is the folder, a clear error."""
    monkeypatch.chdir(tmp_path)
    Path("keyfer-ferplus-fast").mkdir()
    with caplog.at_level(logging.WARNING, logger="keyfer.models.registry"):
        info = create_model("keyfer-ferplus-fast").info
    assert info.name == "keyfer-ferplus-fast"
    assert info.digest == get_record("keyfer-ferplus-fast").digest
    assert "./keyfer-ferplus-fast" in caplog.text
    with pytest.raises(KeyferError, match="is a folder"):
        create_model("./keyfer-ferplus-fast")


def _without(key: str):
    """A damage: the checkpoint without ``key``."""
    return lambda state: {k: v for k, v in state.items() if k != key}


def _fewer_classes(state: dict) -> dict:
    """A damage: a model of 7 classes beside the head's 8."""
    model = state["model"]
    config = {**model["config"], "num_classes": 7}
    return {**state, "model": {**model, "config": config, "classes": model["classes"][:7]}}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_without("model"), "has no model"),
        (_without("head"), "has no head"),
        (_fewer_classes, "head weights .* do not fit its model config: size mismatch"),
        (lambda state: {**state, "appearance": {}}, "has appearance weights"),
    ],
    ids=["no-model", "no-head", "wrong-head-shape", "appearance-without-branch"],
)
def test_damaged_checkpoint_is_one_error_line(tmp_path, damage, message):
    """A tagged checkpoint without its config or head, or whose weights do not fit its config:
    one error line naming the file, exit 1, no traceback."""
    good = torch.load(write_random_head(tmp_path / "good.pt", 0), weights_only=True)
    bad = tmp_path / "bad.pt"
    torch.save(damage(good), bad)
    result = CliRunner().invoke(main, ["predict", str(EXAMPLE), "--model", str(bad)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    (line,) = result.output.strip().splitlines()
    assert str(bad) in line
    assert re.search(message, line)


def test_truncated_checkpoint_says_so(tmp_path):
    """A checkpoint cut short (an interrupted copy): the error names the file and the cause."""
    path = write_random_head(tmp_path / "checkpoint.pt", 0)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(KeyferError, match=f"{re.escape(str(path))}.*truncated"):
        create_model(path)


# --- 5. Video: names, damaged streams, no frames, frame rate, tiling ------------------------------
# Bad videos: names that are not UTF-8, damaged streams, no frames, the annotated video's frame
# rate, and one tiling default for photos and videos, in the CLI and the API alike.


@pytest.fixture(scope="module")
def recognizer(checkpoint) -> ExpressionRecognizer:
    return ExpressionRecognizer(str(checkpoint), device="cpu")


def _drifting(astronaut: np.ndarray, count: int, side: int = 128) -> list[np.ndarray]:
    """``count`` distinct side x side frames (up to 21): the example face shifted right 6 px
    a frame."""
    small = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    return [np.roll(small, 6 * shift, axis=1) for shift in range(count)]


def _damaged(path: Path, wipe: int) -> Path:
    """A copy of the video at ``path`` with ``wipe`` bytes in its middle set to zero."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + wipe] = bytes(wipe)
    damaged = path.with_name(f"damaged{path.suffix}")
    damaged.write_bytes(bytes(data))
    return damaged


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_video_whose_name_is_not_utf8_is_read_and_annotated_without_a_crash(
    checkpoint, astronaut, tmp_path
):
    """A video named b'bad\\xff.avi', annotated into a folder named b'ann\\xff': OpenCV
    segfaulted on both names (in a subprocess, so that a crash cannot take pytest with it)."""
    video = os.fsencode(tmp_path) + b"/bad\xff.avi"
    _write_video(video, _drifting(astronaut, 3, side=256))
    annotate = os.fsencode(tmp_path) + b"/ann\xff"
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "keyfer.cli", "predict", video, "--model", str(checkpoint),
               "--no-tiling", "--jsonl", str(out), "--annotate", annotate]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    assert result.returncode == 0, result.stderr
    records = _records(out)
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert all(r["error"] is None and len(r["faces"]) == 1 for r in records)
    (written,) = os.listdir(annotate)  # the annotated video, no temporary file left over
    assert written.endswith(b".mp4")
    assert os.path.getsize(os.path.join(annotate, written)) > 0


def test_annotated_video_plays_at_the_source_rate_over_every(
    checkpoint, recognizer, astronaut, tmp_path
):
    """A 10 fps video with --every 5 is annotated at 2 fps (it was a fixed 30 / 5 = 6 fps)."""
    video = tmp_path / "clip.avi"
    _write_video(video, _drifting(astronaut, 10))
    annotate = tmp_path / "ann"
    args = ["predict", str(video), "--model", str(checkpoint), "--every", "5", "--no-tiling",
            "--jsonl", str(tmp_path / "out.jsonl"), "--annotate", str(annotate)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (annotated,) = annotate.glob("*.mp4")
    capture = cv2.VideoCapture(str(annotated))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS / 5)
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 2
    capture.release()


def test_frames_after_a_damaged_region_keep_their_numbers(astronaut, tmp_path):
    """After a damaged region of an MKV, OpenCV renumbered the frames (the first one after it was
    labelled 4 frames early); the decoder's timestamps number them, and the lost ones count."""
    frames = _drifting(astronaut, 20)
    clean = tmp_path / "clip.mkv"
    _write_video(clean, frames)
    source = VideoSource(_damaged(clean, 30000))
    decoded = list(source)
    source.close()
    assert len(decoded) < len(frames)  # the damage cost frames
    for frame in decoded:
        distances = [np.abs(frame.image.astype(int) - f.astype(int)).mean() for f in frames]
        if min(distances) < 10:  # a frame decoded whole (the damaged one is not)
            assert frame.index == int(np.argmin(distances))
            assert frame.time_s == pytest.approx(frame.index / FPS)
    lost = len(frames) - len(decoded)
    assert source.corrupt_frames == lost
    assert [f.corrupt_before for f in decoded] == sorted(f.corrupt_before for f in decoded)
    assert decoded[-1].corrupt_before == lost


def test_corrupt_frame_counts_are_in_the_records(checkpoint, astronaut, tmp_path):
    """The count of corrupt frames was only logged; each frame record now carries the count of
    the video's frames before it that were corrupt or missing."""
    clean = tmp_path / "clip.mkv"
    _write_video(clean, _drifting(astronaut, 20))
    out = tmp_path / "out.jsonl"
    args = ["predict", str(_damaged(clean, 30000)), "--model", str(checkpoint),
            "--no-tiling", "--jsonl", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = _records(out)
    assert records[0]["corrupt_frames_before"] == 0
    assert records[-1]["frame"] == 19
    for position, record in enumerate(records):  # each frame is its position plus those lost
        assert record["frame"] == position + record["corrupt_frames_before"]


def test_avi_that_loses_frames_in_a_damaged_region_gets_an_error_record(
    checkpoint, astronaut, tmp_path
):
    """An AVI renumbers the frames after a damaged region, and only its frame count shows the
    loss: the frame records are followed by an error record saying how early they may be."""
    clean = tmp_path / "clip.avi"
    _write_video(clean, _drifting(astronaut, 20))
    out = tmp_path / "out.jsonl"
    args = ["predict", str(_damaged(clean, 30000)), "--model", str(checkpoint),
            "--no-tiling", "--jsonl", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    *frames, last = _records(out)
    assert frames and all(r["error"] is None for r in frames)
    assert "frames are missing" in last["error"] and "early" in last["error"]
    assert "Traceback" not in result.output


def test_video_without_frames_gets_an_error_record(checkpoint, recognizer, tmp_path):
    """A video with no frame gave no record at all and exit 0; now an error record, exit 1."""
    video = tmp_path / "zero.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 64))
    writer.release()
    out = tmp_path / "out.jsonl"
    args = ["predict", str(video), "--model", str(checkpoint), "--jsonl", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    (record,) = _records(out)
    assert record["path"] == str(video) and "no frame could be decoded" in record["error"]
    with pytest.raises(KeyferError, match="no frame could be decoded"):
        list(recognizer.predict_video(video))


def _small_face_clip(astronaut: np.ndarray, path: Path) -> Path:
    """Two 640x640 frames holding the example face at about 36 px: only tiling finds it."""
    frame = np.zeros((640, 640, 3), np.uint8)
    frame[20:180, 20:180] = cv2.resize(astronaut, (160, 160), interpolation=cv2.INTER_AREA)
    _write_video(path, [frame, frame])
    return path


def test_video_tiling_default_is_the_same_in_the_cli_and_the_api(
    checkpoint, recognizer, astronaut, tmp_path
):
    """`keyfer predict clip` tiled videos off while `predict_video` tiled them on; both now tile
    by default, and `predict_video(tiling=False)` is a per-call choice that changes nothing else."""
    video = _small_face_clip(astronaut, tmp_path / "small.avi")
    out = tmp_path / "out.jsonl"
    args = ["predict", str(video), "--model", str(checkpoint), "--jsonl", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [len(r["faces"]) for r in _records(out)] == [1, 1]
    assert [len(f.faces) for f in recognizer.predict_video(video)] == [1, 1]
    assert [len(f.faces) for f in recognizer.predict_video(video, tiling=False)] == [0, 0]
    assert recognizer.pipeline.detector.tiling is True
    result = CliRunner().invoke(main, [*args, "--no-tiling"])
    assert [len(r["faces"]) for r in _records(out)] == [0, 0]


# --- 6. Faces: memory, duplicates, one face set ---------------------------------------------------
# Bad inputs for memory and faces: huge images (a byte budget for the images in flight, an honest
# out-of-memory message), loose duplicate boxes from tiling, and one face set for ``keyfer predict``
# and ``keyfer landmarks``.

AFW = real_data("afw")
needs_afw = needs_real_data("afw")


# Huge images: bytes in flight, and MemoryError.


def test_huge_images_decoded_ahead_keep_to_a_byte_budget():
    """Images decoded ahead hold at most the byte budget, or one larger image alone; every
    image still comes out, in order."""
    sizes = {Path(f"p{i}"): n for i, n in enumerate([40, 40, 40, 250, 30, 30, 30, 30, 90])}
    budget = 100
    lock = threading.Lock()
    started: list[Path] = []
    handed_out: list[Path] = []
    overdrawn: list[list[Path]] = []

    def read(path: Path) -> np.ndarray:
        with lock:
            started.append(path)
            live = [p for p in started if p not in handed_out]
            if sum(sizes[p] for p in live) > budget and live != [path]:
                overdrawn.append(live)
        return np.full(1, sizes[path])

    results = []
    for path, future in _decoded_ahead(list(sizes), read, size=sizes.get, max_bytes=budget):
        with lock:
            handed_out.append(path)
        results.append((path, int(future.result()[0])))
    assert results == list(sizes.items())
    assert overdrawn == []


def test_huge_images_are_batched_by_bytes_and_a_larger_one_alone(tmp_path, monkeypatch):
    """A batch holds at most the batch byte budget of decoded images; an image larger than the
    budget goes through alone; every image gets its record."""
    sides = [20, 20, 20, 60, 20, 20]  # 1200-byte images, and one of 10800 bytes
    for i, side in enumerate(sides):
        Image.new("RGB", (side, side), "gray").save(tmp_path / f"{i}.png")
    monkeypatch.setattr(runner, "_BATCH_BYTES", 2500)
    batches: list[list[int]] = []

    def describe(images, paths, annotate):
        batches.append([image.nbytes for image in images])
        return [([], None)] * len(images)

    class Records:
        def __init__(self) -> None:
            self.written: list[dict] = []

        def write(self, record: dict) -> None:
            self.written.append(record)

    writer = Records()
    summary = runner.run_images([tmp_path], describe, writer, batch_images=16)
    assert summary.images == len(sides) and summary.errors == 0
    assert [len(r["faces"]) for r in writer.written] == [0] * len(sides)
    assert batches == [[1200, 1200], [1200], [10800], [1200, 1200]]


def test_out_of_memory_while_decoding_says_so(monkeypatch):
    """A MemoryError while decoding is reported as a lack of memory, not as a corrupt file."""

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    with pytest.raises(ImageReadError) as caught:
        read_image(EXAMPLE)
    message = str(caught.value)
    assert "not enough memory" in message and str(EXAMPLE) in message
    assert "corrupt" not in message


def test_the_bytes_an_image_will_hold_come_from_its_header(tmp_path):
    """The size estimate reads only the header: the decoded array's bytes for an image, and 0
    for a missing file, a FIFO (which must not block) or a non-image."""
    assert decoded_nbytes(EXAMPLE) == read_image(EXAMPLE).nbytes
    assert decoded_nbytes(tmp_path / "missing.png") == 0
    (tmp_path / "notes.png").write_text("not an image")
    assert decoded_nbytes(tmp_path / "notes.png") == 0
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.png")
        assert decoded_nbytes(tmp_path / "pipe.png") == 0


# Tiling duplicates: a loose box holding a better detection of the same face.

# AFW 2086996835_1.jpg: the whole-image pass's loose box (score 0.54) around a face that a
# tile found tightly (0.94); IoU 0.29, under the NMS threshold of 0.3.
LOOSE = ([547.0, 285.0, 703.0, 441.0], 0.54)
TIGHT = ([574.0, 314.0, 658.0, 398.0], 0.94)


def _detections(*faces: tuple[list[float], float]) -> tuple[torch.Tensor, ...]:
    boxes = torch.tensor([box for box, _ in faces]).reshape(-1, 4)
    scores = torch.tensor([score for _, score in faces])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    return boxes, centres[:, None].repeat(1, 6, 1), scores


def test_a_loose_box_holding_a_better_detection_is_suppressed():
    """Only the loose, worse box that holds a better one goes; a better box holding a worse
    small one, and nearby faces that overlap, all stay."""
    assert holds_better(*_detections(LOOSE, TIGHT)[::2]).tolist() == [True, False]
    big_good, small_worse = ([0.0, 0.0, 200.0, 200.0], 0.95), ([50.0, 50.0, 100.0, 100.0], 0.6)
    assert holds_better(*_detections(big_good, small_worse)[::2]).tolist() == [False, False]
    left, right = ([0.0, 0.0, 100.0, 100.0], 0.7), ([60.0, 10.0, 160.0, 110.0], 0.95)
    assert holds_better(*_detections(left, right)[::2]).tolist() == [False, False]


def test_tiling_does_not_give_one_face_two_records():
    """The detector's merge of the whole-image pass and the tiles keeps one box per face: the
    tile's tight box, not the whole image's loose box around it; a distinct face stays."""
    detector = FaceDetector(network=lambda batch: None)  # _merge needs no network
    other = ([183.0, 371.0, 269.0, 458.0], 0.96)
    merged = detector._merge(_detections(LOOSE, other), _detections(TIGHT))
    assert sorted(merged.scores.tolist()) == pytest.approx([0.94, 0.96])
    assert merged.boxes.tolist() == [other[0], TIGHT[0]]


@needs_afw
def test_a_group_photo_gets_one_record_per_face(pipeline):
    """AFW 2086996835_1.jpg: six faces, none inside another's box (the loose box is gone)."""
    faces = pipeline(read_image(AFW / "2086996835_1.jpg"))
    assert len(faces) == 6
    inside = (
        intersection_areas(faces.boxes, faces.boxes)
        / ((faces.boxes[:, 2:] - faces.boxes[:, :2]).prod(dim=1)[None, :])
    )
    assert (inside.fill_diagonal_(0) < 0.5).all()


# One face set: predict's faces are those of keyfer landmarks, whatever the model.


@pytest.fixture(scope="module")
def gray3_recognizer():
    recognizer = ExpressionRecognizer("keyfer-ferplus-fast", device="cpu")
    assert recognizer.model.info.color_mode == "gray3"
    return recognizer


def _assert_same_faces(recognized, landmarks) -> None:
    assert len(recognized) == len(landmarks)
    for name in ("boxes", "scores", "presence", "mesh", "landmarks68"):
        assert torch.equal(getattr(recognized, name), getattr(landmarks, name)), name


def test_predict_faces_are_those_of_landmarks_for_a_gray_model(gray3_recognizer, astronaut):
    """The gray3 model's faces (boxes, presence, mesh) are the landmarks pipeline's, of the
    colour crop, not its own pass on the gray crop."""
    faces, described = gray3_recognizer.analyze(astronaut)
    _assert_same_faces(faces, FacePipeline(device="cpu").batch([astronaut])[0])
    assert [face.to_record()["presence"] for face in described] == [
        round(float(p), 4) for p in faces.presence
    ]


@needs_afw
def test_predict_and_landmarks_find_the_same_faces_on_a_group_photo(gray3_recognizer):
    """AFW 18489332_1.jpg: a profile the gray crop's FaceMesh pass scored lower was dropped by
    predict only; both commands now find the same 12 faces."""
    image = read_image(AFW / "18489332_1.jpg")
    faces, described = gray3_recognizer.analyze(image)
    landmarks = FacePipeline(device="cpu").batch([image])[0]
    _assert_same_faces(faces, landmarks)
    assert len(described) == len(landmarks) == 12


# --- 7. Data rows, configs, images, devices -------------------------------------------------------
# Bad rows, bad configs, bad images and bad devices: each is skipped and counted, or one error line,
# never a traceback, a silent wrong value or a misleading message.

FERPLUS_IMAGE = ROOT / "tests/data/ferplus_fixture/data/FER2013Train/fer0000000.png"
BOX = b'"(0, 0, 48, 48)"'
HAPPY = b"0,8,2,0,0,0,0,0,0,0"
"""Ten FERPlus votes with a clear happiness majority."""


def _ferplus_root(tmp_path: Path, bad_rows: list[bytes], split: str = "FER2013Valid") -> Path:
    """A FERPlus root whose label.csv has one good happiness row, then ``bad_rows``."""
    folder = tmp_path / "ferplus" / "data" / split
    folder.mkdir(parents=True)
    shutil.copy(FERPLUS_IMAGE, folder / "good.png")
    rows = [b"good.png," + BOX + b"," + HAPPY, *bad_rows]
    (folder / "label.csv").write_bytes(b"\n".join(rows) + b"\n")
    return tmp_path / "ferplus"


# FERPlus rows that were fatal or wrongly accepted.


def test_ferplus_row_with_latin1_byte_is_skipped_and_counted(tmp_path: Path) -> None:
    """A Latin-1 byte (0xe9) in a file name or a vote: that row is malformed, not the file."""
    root = _ferplus_root(
        tmp_path, [b"caf\xe9.png," + BOX + b"," + HAPPY, b"b.png," + BOX + b",\xe9," + HAPPY[2:]]
    )
    split = load_ferplus(root, "valid")
    assert [s.path.name for s in split.samples] == ["good.png"]
    assert len(split.malformed) == 2 and "not UTF-8" in split.malformed[0]


def test_ferplus_huge_vote_is_skipped_and_counted(tmp_path: Path) -> None:
    """A vote of 99999999999999999999999 (past int64) is a malformed row, not an overflow."""
    root = _ferplus_root(
        tmp_path, [b"good.png," + BOX + b",99999999999999999999999,0,0,0,0,0,0,0,0,0"]
    )
    split = load_ferplus(root, "valid")
    assert len(split.samples) == 1 and len(split.malformed) == 1
    assert "line 2" in split.malformed[0]


def test_ferplus_negative_vote_is_skipped_and_counted(tmp_path: Path) -> None:
    """Negative votes used to be accepted (here they would make a happiness majority)."""
    root = _ferplus_root(tmp_path, [b"good.png," + BOX + b",-3,8,0,0,0,0,0,0,0,0"])
    split = load_ferplus(root, "valid")
    assert len(split.samples) == 1 and len(split.malformed) == 1


def test_ferplus_paths_outside_the_label_folder_are_skipped(tmp_path: Path) -> None:
    """An absolute image path, or one with ``..``, is malformed even when the file exists."""
    outside = tmp_path / "outside.png"
    shutil.copy(FERPLUS_IMAGE, outside)
    rows = [
        str(outside).encode() + b"," + BOX + b"," + HAPPY,
        b"../../../outside.png," + BOX + b"," + HAPPY,
    ]
    split = load_ferplus(_ferplus_root(tmp_path, rows), "valid")
    assert [s.path.name for s in split.samples] == ["good.png"]
    assert len(split.malformed) == 2


def test_eval_cli_skips_and_counts_bad_ferplus_rows(tmp_path: Path, checkpoint: Path) -> None:
    """`keyfer eval` on a label.csv with a Latin-1 row, a huge vote, a negative vote and a
    ``../`` path: exit 0, the good row scored, the four bad ones in ``skipped_rows``."""
    rows = [
        b"caf\xe9.png," + BOX + b"," + HAPPY,
        b"good.png," + BOX + b",99999999999999999999999,0,0,0,0,0,0,0,0,0",
        b"good.png," + BOX + b",-3,8,0,0,0,0,0,0,0,0",
        b"../FER2013Valid/good.png," + BOX + b"," + HAPPY,
    ]
    root, out = _ferplus_root(tmp_path, rows), tmp_path / "report.json"
    args = ["eval", "--model", str(checkpoint), "--dataset", "ferplus", "--root", str(root),
            "--split", "valid", "--device", "cpu", "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n"] == 1 and report["skipped_rows"] == {"malformed_row": 4}


# The same row problems in the other list-file adapters.


def test_fer2013_bad_numbers_and_latin1_rows_are_skipped(tmp_path: Path) -> None:
    """An emotion of "²" (a digit to isdigit, not to int), a pixel past int64, and a Latin-1
    row: each skipped and counted; the CSV's good rows still load."""
    root = dataset_fixtures.make_fer2013_csv(tmp_path / "fer2013")
    pixels = " ".join(["7"] * 2303 + ["99999999999999999999999"])
    good = " ".join(["7"] * 2304)
    with (root / "fer2013.csv").open("ab") as handle:
        handle.write(f"\u00b2,{good},PublicTest\n3,{pixels},PublicTest\n".encode())
        handle.write(b"3," + good.encode() + b",Public\xe9Test\n")
    split = load_fer2013(root, "publictest")
    assert len(split.samples) == 2
    assert split.skipped == {"bad_label": 2, "bad_pixels": 2, "malformed_row": 2}


def test_rafdb_bad_label_latin1_line_and_folder_name_are_skipped(tmp_path: Path) -> None:
    """A label "²", a Latin-1 line, and a name climbing out of Image/original with ``..``."""
    root = dataset_fixtures.make_rafdb(tmp_path / "rafdb", original=True)
    shutil.copy(root / "Image/original/train_00001.jpg", root / "outside.jpg")
    with (root / "EmoLabel/list_patition_label.txt").open("ab") as handle:
        handle.write("train_00001.jpg \u00b2\n".encode())
        handle.write(b"train_0000\xe9.jpg 4\n")
        handle.write(b"train_x/../../../outside.jpg 4\n")
    split = load_rafdb(root, "train")
    assert [s.path.name for s in split.samples] == ["train_00001.jpg", "train_00002.jpg"]
    assert split.skipped == {"bad_label": 2, "malformed_row": 3}


def test_affectnet_latin1_row_and_paths_outside_the_images_are_skipped(tmp_path: Path) -> None:
    """A Latin-1 row, an absolute path and a ``..`` path to an existing image: all skipped."""
    root = dataset_fixtures.make_affectnet(tmp_path / "affectnet")
    box = tuple(v * dataset_fixtures.PHOTO_SCALE for v in dataset_fixtures.FACE_BOX)
    image = root / "Manually_Annotated_Images/101/face.jpg"
    rows = [
        dataset_fixtures._affectnet_row(str(image), box, "1"),
        dataset_fixtures._affectnet_row("../Manually_Annotated_Images/101/face.jpg", box, "1"),
    ]
    with (root / "Manually_Annotated_file_lists/validation.csv").open("ab") as handle:
        handle.write("\n".join(rows).encode() + b"\n")
        handle.write(dataset_fixtures._affectnet_row("101/caf\xe9.jpg", box, "1").encode("latin-1"))
    split = load_affectnet(root, "validation")
    assert len(split.samples) == 3
    assert split.skipped == {"missing_image": 1, "bad_label": 1, "bad_box": 1, "malformed_row": 3}


# Configs.


@pytest.mark.parametrize("config", sorted(shipped_configs().values()), ids=lambda p: p.stem)
def test_shipped_configs_pass_the_type_checks(config: Path) -> None:
    """Every shipped recipe still loads with its values' types checked."""
    experiment = load_experiment(config)
    assert isinstance(experiment.train.epochs, int) and isinstance(experiment.train.lr, float)


def test_non_utf8_config_is_one_line_error(tmp_path: Path) -> None:
    """A config saved in Latin-1 is a KeyferError naming the file, not a UnicodeDecodeError."""
    config = tmp_path / "latin1.yaml"
    config.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(KeyferError, match="cannot read config .*latin1.yaml"):
        load_experiment(config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.epochs=[1"], r"bad --set 'train.epochs=\[1': the value is not YAML"),
        (["train.epochs=abc"], r"train.epochs = 'abc' \(str\); expected int"),
        (["train=5", "train.epochs=3"], "train is not a section"),
        (["model.taps.first=4"], "model.taps is not a section"),
    ],
)
def test_bad_set_is_one_line_naming_the_problem(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    """--set values that are not YAML, of the wrong type, or under a key that is not a section."""
    config = tmp_path / "c.yaml"
    config.write_text("name: x\nmodel:\n  taps: [4, 8]\n")
    with pytest.raises(KeyferError, match=message):
        load_experiment(config, overrides)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=2.5", r"train.epochs = 2.5 \(float\); expected int"),
        ("train.mirror=1", r"train.mirror = 1 \(int\); expected bool"),
        ("train.lr=true", r"train.lr = True \(bool\); expected a finite float"),
        ("train.sigma=.nan", r"train.sigma = nan \(float\); expected a finite float"),
        ("train.init_from=5", r"train.init_from = 5 \(int\); expected str \| None"),
        ("train.balanced_sampler=yes please", r"train.balanced_sampler = 'yes please'"),
        ("train.images.augment={rotation: x}", r"train.images.augment.rotation = 'x'"),
        (
            "train.images.augment={erase_area: [0.1]}",
            r"train.images.augment.erase_area = \[0.1\] \(list\)",
        ),
        ("model.dim=64.5", r"model.dim = 64.5 \(float\); expected int"),
        ("model.taps=[4, 8.5]", r"model.taps\[1\] = 8.5 \(float\); expected int"),
        ("model.use_global=0", r"model.use_global = 0 \(int\); expected bool"),
        ("model.keypoints=[1, a]", r"model.keypoints = \[1, 'a'\] \(list\)"),
        ("train_subset=0.5", r"train_subset = 0.5 \(float\); expected int \| None"),
        ("name=[a]", r"name = \['a'\] \(list\); expected str"),
    ],
)
def test_config_value_of_wrong_type_names_key_value_and_type(
    tmp_path: Path, override: str, message: str
) -> None:
    """Each of these was accepted, or failed with a message that did not name the key."""
    config = tmp_path / "c.yaml"
    config.write_text("name: x\n")
    with pytest.raises(KeyferError, match=f"^bad config: {message}"):
        load_experiment(config, [override])


def test_config_numbers_convert_only_without_loss(tmp_path: Path) -> None:
    """2.0 for an int field is 2, 1 for a float field 1.0, and 1e-4 (text to YAML 1.1) 0.0001."""
    config = tmp_path / "c.yaml"
    config.write_text("name: x\ntrain:\n  epochs: 2.0\n  lr: 1e-4\n  sigma: 1\n")
    train = load_experiment(config).train
    assert (train.epochs, train.lr, train.sigma) == (2, 1e-4, 1.0)
    assert type(train.epochs) is int and type(train.sigma) is float


def test_train_cli_bad_set_is_one_line(tmp_path: Path) -> None:
    """`keyfer train --set train.epochs=[1`: one error line, exit 1, no traceback."""
    config = tmp_path / "c.yaml"
    config.write_text("name: x\n")
    result = CliRunner().invoke(main, ["train", str(config), "--set", "train.epochs=[1"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: bad --set") and result.output.count("\n") == 1


# Devices.


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_on_a_build_without_it_is_one_line(tmp_path: Path, checkpoint: Path) -> None:
    """--device mps where PyTorch has no MPS: a KeyferError, not a RuntimeError later."""
    with pytest.raises(KeyferError, match="no MPS"):
        resolve_device("mps")
    args = ["predict", str(FERPLUS_IMAGE), "--model", str(checkpoint), "--device", "mps"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: device 'mps'")


def test_cuda_index_past_the_gpus_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda:3 on a machine with one GPU is refused up front."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(KeyferError, match=r"only cuda:0\.\.0"):
        resolve_device("cuda:3")


def test_device_type_keyfer_does_not_run_on_is_unknown() -> None:
    """``meta`` is a torch device, but not one to run a model on."""
    with pytest.raises(KeyferError, match="unknown device 'meta'"):
        resolve_device("meta")


# Image ranges.


def test_float_array_in_0_255_is_scaled_with_a_warning(
    astronaut: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """API float arrays in 0..255 used to clip to white (and find no face)."""
    with caplog.at_level(logging.WARNING, logger="keyfer.io.images"):
        out = to_rgb_array(astronaut.astype(np.float32))
    np.testing.assert_array_equal(out, astronaut)
    assert "read as 0..255" in caplog.text


def test_float_array_in_0_1_is_read_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A float array with no value above 1 stays in 0..1, with no guess to warn about."""
    with caplog.at_level(logging.WARNING, logger="keyfer.io.images"):
        out = to_rgb_array(np.array([[0.0, 0.5, 1.0]], np.float32))
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])
    assert caplog.text == ""


def test_float_and_int32_tiffs_in_0_255_are_read_as_8_bit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A float (mode F) TIFF and an int32 (mode I) TIFF holding 0..255 read as those values."""
    values = np.array([[0, 7, 128, 255]])
    for dtype, mode in ((np.float32, "F"), (np.int32, "I")):
        path = tmp_path / f"{mode}.tif"
        Image.fromarray(values.astype(dtype)).save(path)
        assert Image.open(path).mode == mode
        with caplog.at_level(logging.WARNING, logger="keyfer.io.images"):
            np.testing.assert_array_equal(read_image(path)[0, :, 0], [0, 7, 128, 255])
        assert str(path) in caplog.text
        caplog.clear()


# Files that are not regular files.


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_is_not_a_regular_file(tmp_path: Path) -> None:
    """A FIFO was reported as 'empty (0 bytes)'."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(fifo)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_device_file_is_not_a_regular_file() -> None:
    """/dev/zero was reported as 'empty (0 bytes)'."""
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image("/dev/zero")


def test_symlink_loop_and_broken_symlink_say_so(tmp_path: Path) -> None:
    """Both were reported as 'no such file'."""
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "broken.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageReadError, match="symbolic link loop"):
        read_image(tmp_path / "a.png")
    with pytest.raises(ImageReadError, match="broken symbolic link"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "gone.png")
