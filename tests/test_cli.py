"""``keyfer landmarks``: the JSON schema, streaming, annotation and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from keyfer.cli import main
from tests.conftest import EXAMPLE


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["landmarks", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def records(json_path: Path) -> list[dict]:
    document = json.loads(json_path.read_text())
    assert document["schema_version"] == 3 and "keyfer_version" in document
    return document["records"]


def test_main_job_writes_the_documented_schema(tmp_path):
    code, _ = run(EXAMPLE, "--json", tmp_path / "out.json", "--annotate", tmp_path / "ann")
    assert code == 0
    (record,) = records(tmp_path / "out.json")
    assert set(record) == {"path", "width", "height", "faces", "error"}
    assert (record["width"], record["height"], record["error"]) == (512, 512, None)
    (face,) = record["faces"]
    keys = {"box", "score", "presence", "found_by", "keypoints6", "landmarks68", "mesh"}
    assert set(face) == keys
    assert face["found_by"] == "detector"
    assert len(face["box"]) == 4 and len(face["keypoints6"]) == 6
    assert np.array(face["landmarks68"]).shape == (68, 2)
    assert np.array(face["mesh"]).shape == (468, 3)
    assert list((tmp_path / "ann").rglob("astronaut.png.jpg"))


def test_jsonl_streams_one_record_per_line(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(EXAMPLE.read_bytes())
    code, _ = run(folder, "--jsonl", tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert code == 0
    assert [Path(json.loads(line)["path"]).name for line in lines] == ["a.png", "b.png"]


def test_bad_files_get_error_records_and_never_stop_the_batch(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "good.png").write_bytes(EXAMPLE.read_bytes())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(EXAMPLE.read_bytes()[:5000])
    (folder / "notes.txt").write_text("not an image")
    named_text = tmp_path / "readme.md"
    named_text.write_text("# hello")
    missing = tmp_path / "missing.png"
    code, output = run(folder, named_text, missing, "--json", tmp_path / "out.json")
    assert code == 1
    by_name = {Path(r["path"]).name: r for r in records(tmp_path / "out.json")}
    assert set(by_name) == {"good.png", "empty.jpg", "corrupt.png", "readme.md", "missing.png"}
    assert len(by_name["good.png"]["faces"]) == 1 and by_name["good.png"]["error"] is None
    for name in ("empty.jpg", "corrupt.png", "readme.md", "missing.png"):
        assert by_name[name]["error"] and name in by_name[name]["error"]
        assert by_name[name]["faces"] == []
    assert "1 non-image files skipped" in output
    assert "Traceback" not in output


def test_a_folder_without_images_is_one_clear_message(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    code, output = run(tmp_path)
    assert code == 2
    assert "no images found" in output
    assert "Traceback" not in output


def test_unknown_device_is_one_line(tmp_path):
    code, output = run(EXAMPLE, "--device", "tpu")
    assert code == 1
    assert "unknown device" in output


@pytest.mark.parametrize(("flags", "found_by"), [([], ["whole-image"]), (["--no-fallback"], [])])
def test_a_tight_face_crop_is_one_whole_image_face_unless_no_fallback(
    tmp_path, tight_crop, flags, found_by
):
    path = tmp_path / "tight.png"
    Image.fromarray(tight_crop).save(path)
    code, _ = run(path, "--json", tmp_path / "out.json", *flags)
    (record,) = records(tmp_path / "out.json")
    assert code == 0 and [face["found_by"] for face in record["faces"]] == found_by


def _face_box(tmp_path: Path, image: Image.Image, name: str, **save) -> tuple[dict, list]:
    path = tmp_path / name
    image.save(path, **save)
    code, _ = run(path, "--json", tmp_path / "out.json")
    (record,) = records(tmp_path / "out.json")
    assert code == 0 and record["error"] is None
    return record, [face["box"] for face in record["faces"]]


@pytest.fixture(scope="module")
def reference_box() -> np.ndarray:
    from keyfer.faces.pipeline import FacePipeline
    from keyfer.io.images import read_image

    return FacePipeline()(read_image(EXAMPLE)).boxes[0].numpy()


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("L", "png"), ("RGBA", "png"), ("P", "png"), ("I;16", "png"), ("RGB", "jpg")],
)
def test_image_modes_find_the_same_face(tmp_path, reference_box, mode, suffix):
    source = Image.open(EXAMPLE)
    if mode == "I;16":
        gray = np.asarray(source.convert("L"), np.uint16) * 257
        image = Image.fromarray(gray)
    else:
        image = source.convert(mode)
    _, boxes = _face_box(tmp_path, image, f"face.{suffix}")
    assert len(boxes) == 1
    assert np.abs(np.array(boxes[0]) - reference_box).max() < 12


def test_exif_rotation_is_applied_before_detection(tmp_path):
    upright = Image.open(EXAMPLE).convert("RGB").crop((0, 0, 400, 512))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera stores
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    record, boxes = _face_box(tmp_path, stored, "rotated.jpg", exif=exif, quality=95)
    assert (record["width"], record["height"]) == (400, 512)
    _, upright_boxes = _face_box(tmp_path, upright, "upright.jpg", quality=95)
    assert len(boxes) == 1
    assert np.abs(np.array(boxes[0]) - np.array(upright_boxes[0])).max() < 12


@pytest.mark.parametrize("size", [1, 8000])
def test_tiny_and_huge_images(tmp_path, size):
    image = Image.fromarray(np.full((size, size), 128, np.uint8))
    record, boxes = _face_box(tmp_path, image, "plain.png", compress_level=1)
    assert (record["width"], record["height"]) == (size, size)
    assert boxes == []
