"""AFW / 300-W landmark scoring (keyfer.landmark_eval and keyfer eval-landmarks) on synthetic
annotations and records, and on the real AFW annotations when they are present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from keyfer.cli import main
from keyfer.landmark_eval import (
    AnnotatedFace,
    LandmarkEvalError,
    read_annotations,
    read_pts,
    read_records,
    score_landmarks,
)
from tests.conftest import needs_real_data, real_data

IOD = 60.0


def face_points(x: float, y: float, seed: int) -> np.ndarray:
    """(68, 2) points of a 100 x 100 face at (x, y), outer eye corners IOD apart."""
    points = np.random.default_rng(seed).integers(0, 101, (68, 2)).astype(float)
    points[[0, 1]] = [[0, 0], [100, 100]]  # the bounding box: (x, y) to (x + 100, y + 100)
    points[36], points[45] = [20, 40], [20 + IOD, 40]
    return points + [x, y]


def write_pts(path: Path, points: np.ndarray) -> None:
    """A 300-W .pts file of ``points`` in keyfer's frame (the file is 1-based: +0.5)."""
    rows = "\n".join(f"{x + 0.5:.3f} {y + 0.5:.3f}" for x, y in points)
    path.write_text(f"version: 1\nn_points: {len(points)}\n{{\n{rows}\n}}\n")


def detection(points: np.ndarray, shift: float = 0.0, pad: float = 10.0) -> dict:
    """A face record whose box surrounds ``points`` and whose landmarks68 are shifted in x."""
    x0, y0 = points.min(0) - pad
    x1, y1 = points.max(0) + pad
    return {
        "box": [x0, y0, x1, y1],
        "landmarks68": (points + [shift, 0]).tolist(),
        "mesh": np.zeros((468, 3)).tolist(),
    }


def write_records(path: Path, faces: dict[str, list[dict]], schema: int = 3) -> Path:
    records = [
        {"path": f"afw/{stem}.jpg", "error": None, "faces": found} for stem, found in faces.items()
    ]
    path.write_text(json.dumps({"schema_version": schema, "records": records}))
    return path


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Photo ``a`` (two annotated faces, stored twice as a_1 and a_2, as AFW does) and photo
    ``b`` (one face): a_1 is found exactly, a_2 with every point 3 px off, b_1 is missed, and
    photo ``a`` has one false positive."""
    folder = tmp_path / "afw"
    folder.mkdir()
    truth = {
        "a_1": face_points(0, 0, 1),
        "a_2": face_points(300, 0, 2),
        "b_1": face_points(0, 0, 3),
    }
    for stem, points in truth.items():
        write_pts(folder / f"{stem}.pts", points)
    false_positive = {"box": [600, 600, 700, 700], "landmarks68": [], "mesh": []}
    a = [detection(truth["a_1"]), detection(truth["a_2"], shift=3.0), false_positive]
    records = write_records(tmp_path / "records.json", {"a_1": a, "a_2": a, "b_1": []})
    return folder, records, truth


def test_pts_files_are_read_in_keyfers_pixel_frame(tmp_path):
    points = face_points(5, 7, 0)
    write_pts(tmp_path / "x.pts", points)
    np.testing.assert_allclose(read_pts(tmp_path / "x.pts"), points)


@pytest.mark.parametrize(
    "text", ["version: 1\n{\n1 2\n3 4\n}\n", "no braces here", "{\n1 2 x y\n}", "{\n1 2 3\n}"]
)
def test_a_bad_pts_file_is_one_error(tmp_path, text):
    (tmp_path / "x.pts").write_text(text)
    with pytest.raises(LandmarkEvalError, match="x.pts"):
        read_pts(tmp_path / "x.pts")


def test_annotations_are_sorted_with_their_photo(scene):
    folder, _, _ = scene
    faces = read_annotations(folder)
    assert [(f.name, f.photo) for f in faces] == [
        ("a_1.jpg", "a"),
        ("a_2.jpg", "a"),
        ("b_1.jpg", "b"),
    ]
    assert faces[0].iod == pytest.approx(IOD)


def test_a_folder_without_annotations_is_one_error(tmp_path):
    with pytest.raises(LandmarkEvalError, match="no .pts annotations"):
        read_annotations(tmp_path)


@pytest.mark.parametrize("schema", [1, 2, 3])
def test_records_of_every_schema_are_read(tmp_path, schema):
    path = write_records(tmp_path / "r.json", {"a_1": []}, schema)
    assert read_records(path) == {"a_1": {"path": "afw/a_1.jpg", "error": None, "faces": []}}


@pytest.mark.parametrize("text", ['{"schema_version": 4, "records": []}', "[]", "not json"])
def test_other_files_are_not_records(tmp_path, text):
    (tmp_path / "r.json").write_text(text)
    with pytest.raises(LandmarkEvalError, match="r.json"):
        read_records(tmp_path / "r.json")


def test_scores_of_a_synthetic_run(scene):
    folder, records, _ = scene
    metrics, matches = score_landmarks(read_records(records), read_annotations(folder))
    assert [m.truth.name for m in matches] == ["a_1.jpg", "a_2.jpg"]
    assert metrics["found"] == 2 and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["unique_photos"] == 2 and metrics["detections_on_unique_photos"] == 3
    assert metrics["false_positives_total"] == 1 and metrics["fp_per_photo"] == 0.5
    assert metrics["per_face_nme68"] == {"a_1.jpg": 0.0, "a_2.jpg": round(3 / IOD, 5)}
    assert metrics["nme68"] == {
        "count": 2,
        "mean": pytest.approx(1.5 / IOD),
        "median": pytest.approx(1.5 / IOD),
        "fraction_below_0.1": 1.0,
        "max": pytest.approx(3 / IOD),
    }
    assert metrics["nme_jaw17"]["mean"] == pytest.approx(1.5 / IOD)
    assert metrics["per_point_mean_error"] == [round(1.5 / IOD, 5)] * 68
    assert metrics["images_with_errors"] == []
    assert metrics["duplicate_photos_with_differing_outputs"] == []


def test_the_nearest_plausible_box_is_matched(tmp_path):
    points = face_points(0, 0, 4)
    write_pts(tmp_path / "p_1.pts", points)
    too_wide = detection(points, shift=1.0, pad=200.0)  # 4 times the face's width
    off_centre = detection(points + [20, 0], shift=-20.0 + 2.0)
    centred = detection(points, shift=6.0)
    records = write_records(tmp_path / "r.json", {"p_1": [too_wide, off_centre, centred]})
    metrics, _ = score_landmarks(read_records(records), read_annotations(tmp_path))
    assert metrics["per_face_nme68"] == {"p_1.jpg": round(6 / IOD, 5)}
    assert metrics["false_positives_total"] == 1  # too_wide matches no annotated face


def test_differing_copies_and_errors_are_reported(scene):
    folder, records, _ = scene
    data = read_records(records)
    data["a_2"] = {**data["a_2"], "faces": data["a_2"]["faces"][:2], "error": "cannot read"}
    metrics, _ = score_landmarks(data, read_annotations(folder))
    assert metrics["duplicate_photos_with_differing_outputs"] == ["a"]
    assert metrics["images_with_errors"] == ["a_2.jpg"]


def test_records_must_cover_every_annotated_image(scene):
    folder, records, _ = scene
    data = read_records(records)
    del data["b_1"]
    with pytest.raises(LandmarkEvalError, match="1 annotated images have no record"):
        score_landmarks(data, read_annotations(folder))


def test_eval_landmarks_command_adds_runs_and_tabulates_them(scene, tmp_path):
    folder, records, _ = scene
    results, table = tmp_path / "results.json", tmp_path / "table.md"
    for variant in ("default", "other"):
        args = ["eval-landmarks", str(records), str(folder), "--results", str(results)]
        args += ["--variant", variant, "--command", f"keyfer landmarks ({variant})"]
        done = CliRunner().invoke(main, [*args, "--markdown", str(table)])
        assert done.exit_code == 0, done.output
    assert done.output.startswith("found 2 / 3 (66.7%), FP/photo 0.500, NME68 mean 0.0250")
    variants = json.loads(results.read_text())["variants"]
    assert list(variants) == ["default", "other"]
    assert variants["other"]["command"] == "keyfer landmarks (other)"
    assert variants["other"]["results_file"] == str(records)
    assert "| other | `keyfer landmarks (other)` | 2 / 3 | 66.7% | 0.500 |" in table.read_text()


def test_eval_landmarks_errors_are_one_line(scene, tmp_path):
    folder, records, _ = scene
    done = CliRunner().invoke(
        main, ["eval-landmarks", str(records), str(folder), "--markdown", "t"]
    )
    assert done.exit_code == 2 and "give --results too" in done.output
    done = CliRunner().invoke(main, ["eval-landmarks", str(records), str(tmp_path)])
    assert done.exit_code == 1 and "no .pts annotations" in done.output
    assert "Traceback" not in done.output


@needs_real_data("afw")
def test_real_afw_annotations_scored_against_themselves():
    """The 337 AFW annotations in 185 photos; records holding the annotations themselves score
    every face found with NME 0 and no false positive."""
    faces = read_annotations(real_data("afw"))
    records: dict[str, dict] = {}
    for face in faces:
        copies = [f for f in faces if f.photo == face.photo]
        records[face.stem] = {"faces": [_perfect(f) for f in copies], "error": None}
    metrics, _ = score_landmarks(records, faces)
    assert (metrics["n_annotated_faces"], metrics["unique_photos"]) == (337, 185)
    assert metrics["found"] == 337 and metrics["false_positives_total"] == 0
    assert metrics["nme68"]["max"] == 0.0


def _perfect(face: AnnotatedFace) -> dict:
    return detection(face.points, pad=0.0)
