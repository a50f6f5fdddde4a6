"""ONNX export of the crop network and the onnx backend (needs the onnx extra)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from keyfer.api import ExpressionRecognizer
from keyfer.cli import main
from keyfer.export import OnnxDetectorNetwork, export_detector_onnx, onnx_cache_dir
from keyfer.faces.detector import FaceDetector
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None
    or importlib.util.find_spec("onnxscript") is None,
    reason="needs the onnx extra: pip install 'keyfer[onnx]' (the README's test command has it)",
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = CliRunner().invoke(main, ["export", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_export_matches_torch(exported):
    record = json.loads(exported.with_suffix(".json").read_text())
    assert record["max_abs_difference"]["logits"] < 1e-3
    assert record["max_abs_difference"]["mesh"] < 1e-2
    assert record["max_abs_difference"]["importance"] < 1e-3


def test_detector_export_finds_the_torch_detections(tmp_path, astronaut):
    path = tmp_path / "blazeface.onnx"
    differences = export_detector_onnx(path)
    assert differences["regressors"] < 1e-2 and differences["logits"] < 1e-3
    ours = FaceDetector(network=OnnxDetectorNetwork(path))(astronaut)
    theirs = FaceDetector()(astronaut)
    assert len(ours) == len(theirs) >= 1
    assert (ours.boxes - theirs.boxes).abs().max() < 0.05


def test_onnx_backend_agrees_with_torch(exported):
    torch_face = ExpressionRecognizer(device="cpu").predict(EXAMPLE)[0]
    onnx_face = ExpressionRecognizer(device="cpu", backend="onnx", onnx_path=exported).predict(
        EXAMPLE
    )[0]
    assert onnx_face.label == torch_face.label
    for name, p in torch_face.probabilities.items():
        assert onnx_face.probabilities[name] == pytest.approx(p, abs=2e-3)
    assert onnx_face.box == pytest.approx(torch_face.box, abs=0.05)
    # The detector was exported once into the cache (a temporary one in the tests).
    assert list(onnx_cache_dir().glob("blazeface-*.onnx"))
