"""Shipping a model with a fine-tuned network (``tools/ship_model.py``): its head and its
fine-tuned dlib ResNet each get a file of their own, the registry loads both after checking
their sha256, and the fine-tuned weights change the model's digest (the ONNX export cache key)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
import torch

from keyfer.errors import WeightsError
from keyfer.models import registry
from keyfer.nkf.model import NKFModel
from keyfer.train.cached import build_head
from keyfer.train.checkpoint import save_checkpoint
from keyfer.train.config import Experiment
from tools.ship_model import ship

SOURCES = [{"dataset": "ferplus", "root": "ferplus"}, {"dataset": "sfew", "root": "sfew"}]


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty models folder that the registry reads instead of the package's."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setattr(registry, "MODELS_DIR", folder)
    registry._records.cache_clear()
    yield folder
    registry._records.cache_clear()


def fine_tuned_checkpoint(path, shift: float):
    """A checkpoint of a two-source model whose dlib ResNet was 'fine-tuned': the pretrained
    network with ``shift`` added to the stem's bias; the state dict it carries."""
    experiment = Experiment.from_dict(
        {
            "name": "tiny",
            "sources": SOURCES,
            "model": {"appearance": "both", "finetune_appearance": True},
            "train": {"engine": "images"},
        }
    )
    model = NKFModel(experiment.model)
    appearance = {k: v.clone() for k, v in model.appearance.state_dict().items()}
    appearance["network.stem_affine.bias"] += shift
    torch.manual_seed(0)
    head = build_head(experiment.model).state_dict()
    metrics = {"accuracy": 0.5, "domains": {}}
    state = {"head": head, "appearance": appearance, "epoch": 1, "metrics": metrics}
    save_checkpoint(path, experiment, state)
    return appearance


def test_a_fine_tuned_dlib_resnet_ships_in_its_own_file_and_loads(tmp_path, models_dir):
    appearance = fine_tuned_checkpoint(tmp_path / "a.pt", shift=0.5)
    record = ship(tmp_path / "a.pt", "tuned", "keyfer train x", models_dir=models_dir)
    assert record["fine_tuned"]["appearance"]["weights"] == "tuned.appearance.safetensors"
    assert (models_dir / "tuned.appearance.safetensors").is_file()
    loaded = registry.create_model("tuned").appearance.state_dict()
    bias = "network.stem_affine.bias"
    assert torch.equal(loaded[bias], appearance[bias].half().float())
    pretrained = NKFModel(registry.create_model("tuned").config).appearance.state_dict()
    assert not torch.allclose(loaded[bias], pretrained[bias])


def test_fine_tuned_weights_change_the_digest_and_are_checked(tmp_path, models_dir):
    fine_tuned_checkpoint(tmp_path / "a.pt", shift=0.5)
    fine_tuned_checkpoint(tmp_path / "b.pt", shift=-0.5)
    ship(tmp_path / "a.pt", "tuned-a", "x", models_dir=models_dir)
    ship(tmp_path / "b.pt", "tuned-b", "x", models_dir=models_dir)
    registry._records.cache_clear()
    a, b = registry.get_record("tuned-a"), registry.get_record("tuned-b")
    assert a.fine_tuned["appearance"]["sha256"] != b.fine_tuned["appearance"]["sha256"]
    assert replace(a, fine_tuned=b.fine_tuned).digest != a.digest  # the same head, another ResNet
    (models_dir / "tuned-a.appearance.safetensors").write_bytes(
        (models_dir / "tuned-b.appearance.safetensors").read_bytes()
    )
    with pytest.raises(WeightsError, match="does not match the sha256"):
        registry.create_model("tuned-a")
    (models_dir / "tuned-b.appearance.safetensors").unlink()
    with pytest.raises(WeightsError, match="are missing"):
        registry.create_model("tuned-b")


def test_head_only_models_keep_their_digest():
    """Adding ``fine_tuned`` to the records left the shipped models' digests (and so their
    cached ONNX exports) as they were."""
    record = registry.get_record("keyfer-ferplus")
    assert record.fine_tuned == {}
    expected = hashlib.sha256(json.dumps([record.sha256, record.config], sort_keys=True).encode())
    assert record.digest == expected.hexdigest()
