"""`keyfer predict` and `ExpressionRecognizer` on the example image (with a small random head),
and the shipped model on the example when it is there."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from keyfer.api import ExpressionRecognizer
from keyfer.cli import main
from keyfer.data.labels import CLASSES
from keyfer.models.registry import list_models
from keyfer.train.cached import build_head
from keyfer.train.checkpoint import save_checkpoint
from keyfer.train.config import Experiment
from tests.conftest import EXAMPLE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    experiment = Experiment(name="random-head")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_checkpoint(
        path, experiment, {"head": build_head(experiment.model).state_dict(), "epoch": 0}
    )
    return path


@pytest.fixture(scope="module")
def recognizer(checkpoint):
    return ExpressionRecognizer(str(checkpoint), device="cpu")


def test_predict_accepts_paths_pil_and_arrays(recognizer):
    from_path = recognizer.predict(EXAMPLE)
    from_pil = recognizer.predict(Image.open(EXAMPLE))
    from_array = recognizer.predict(np.asarray(Image.open(EXAMPLE).convert("RGB")))
    assert len(from_path) == len(from_pil) == len(from_array) == 1
    face = from_path[0]
    assert set(face.probabilities) == set(CLASSES)
    assert sum(face.probabilities.values()) == pytest.approx(1, abs=1e-3)
    assert face.label == max(face.probabilities, key=face.probabilities.get)
    assert len(face.keypoint_importance) == 68
    assert all(0 < w < 1 for w in face.keypoint_importance)
    assert from_pil[0].probabilities == from_path[0].probabilities
    batched = list(recognizer.predict_batch([EXAMPLE, EXAMPLE]))
    assert len(batched) == 2 and batched[1][0].label == face.label
    for name, p in face.probabilities.items():
        assert batched[1][0].probabilities[name] == pytest.approx(p, abs=1e-3)


def test_predict_cli_writes_json_and_csv(checkpoint, tmp_path):
    out_json, out_csv = tmp_path / "p.json", tmp_path / "p.csv"
    missing = tmp_path / "missing.jpg"
    args = [
        "predict",
        str(EXAMPLE),
        str(missing),
        "--model",
        str(checkpoint),
        "--json",
        str(out_json),
        "--csv",
        str(out_csv),
        "--annotate",
        str(tmp_path / "ann"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1  # the missing file
    document = json.loads(out_json.read_text())
    assert document["schema_version"] == 3 and document["model"] == str(checkpoint)
    good, bad = document["records"]
    assert bad["error"] and bad["faces"] == []
    face = good["faces"][0]
    assert {"box", "landmarks68", "mesh", "expression", "keypoint_importance"} <= set(face)
    assert set(face["pose"]) == {"yaw", "pitch", "roll"} and abs(face["pose"]["yaw"]) < 15
    assert face["reliable"] is True and face["found_by"] == "detector"
    assert list(face["expression"]["probabilities"]) == list(CLASSES)
    good_row, bad_row = csv.DictReader(out_csv.open())
    assert good_row["label"] == face["expression"]["label"] and good_row["reliable"] == "true"
    assert good_row["found_by"] == "detector" and bad_row["found_by"] == ""
    assert float(good_row["p_happiness"]) == face["expression"]["probabilities"]["happiness"]
    assert bad_row["error"] == bad["error"] and bad_row["face"] == ""
    assert list((tmp_path / "ann").rglob("astronaut.png.jpg"))


@pytest.mark.parametrize(("flags", "found_by"), [([], ["whole-image"]), (["--no-fallback"], [])])
def test_predict_takes_a_tight_crop_as_one_face_unless_no_fallback(
    checkpoint, tight_crop, tmp_path, flags, found_by
):
    image, out_json, out_csv = tmp_path / "tight.png", tmp_path / "p.json", tmp_path / "p.csv"
    Image.fromarray(tight_crop).save(image)
    args = ["predict", str(image), "--model", str(checkpoint), "--json", str(out_json),
            "--csv", str(out_csv), *flags]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (record,) = json.loads(out_json.read_text())["records"]
    assert [face["found_by"] for face in record["faces"]] == found_by
    assert [row["found_by"] for row in csv.DictReader(out_csv.open())] == (found_by or [""])


def test_unknown_model_is_one_line():
    result = CliRunner().invoke(main, ["predict", str(EXAMPLE), "--model", "no-such-model"])
    assert result.exit_code == 1
    assert "unknown model" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("name", list_models())
def test_shipped_models_see_the_astronaut_smile(name):
    (face,) = ExpressionRecognizer(name, device="cpu").predict(EXAMPLE)
    assert face.label == "happiness"
    assert face.probabilities["happiness"] > 0.5


def test_the_faces_and_landmarks_are_those_of_keyfer_landmarks():
    from keyfer.faces.pipeline import FacePipeline
    from keyfer.io.images import read_image

    image = read_image(EXAMPLE)
    faces, _ = ExpressionRecognizer("keyfer-ferplus-fast", device="cpu").analyze(image)
    colour = FacePipeline(device="cpu").batch([image])[0]  # what keyfer landmarks runs
    for name in ("boxes", "presence", "mesh", "landmarks68"):
        assert torch.equal(getattr(faces, name), getattr(colour, name)), name


def test_save_crops_and_explain(checkpoint, tmp_path):
    args = ["predict", str(EXAMPLE), "--model", str(checkpoint), "--save-crops",
            str(tmp_path / "crops"), "--annotate", str(tmp_path / "ann"), "--explain"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (crop,) = list((tmp_path / "crops").glob("*.png"))
    assert Image.open(crop).size == (192, 192)
    assert list((tmp_path / "ann").rglob("astronaut.png.jpg"))
