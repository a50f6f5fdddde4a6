"""Every shipped model (after timm's tests over registered models): its record loads, its
weights match, and a forward pass gives finite outputs of the documented shapes. A checkpoint
whose experiment has keyfer 0.2.0's config keys still loads and resumes (config migration)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from keyfer.data.labels import CLASSES
from keyfer.errors import KeyferError
from keyfer.models.registry import create_model, get_record, list_models
from keyfer.train.cached import build_head
from keyfer.train.checkpoint import load_checkpoint, resume_state, save_checkpoint
from keyfer.train.config import Experiment, ImagesConfig, TrainConfig
from tests.test_model_info import as_version_1, rewrite, write_checkpoint


@pytest.mark.parametrize("name", list_models())
def test_shipped_model_runs_and_matches_its_record(name):
    record = get_record(name)
    assert record.classes == list(CLASSES) and record.temperature > 0
    model = create_model(name).eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 192, 192, generator=torch.Generator().manual_seed(0)))
    assert out.logits.shape == (2, len(record.classes)) and torch.isfinite(out.logits).all()
    assert out.mesh.shape == (2, 468, 3) and out.presence.shape == (2,)
    if out.importance is not None:
        assert out.importance.shape == (2, len(model.keypoint_index))
        assert ((out.importance > 0) & (out.importance < 1)).all()


def test_an_unknown_model_name_lists_the_shipped_ones():
    with pytest.raises(KeyferError, match="shipped models: "):
        get_record("keyfer-nope")


# The train keys of the experiment saved in a keyfer 0.2.0 checkpoint (config version 1).
KEYFER_0_2_0_TRAIN_KEYS = {
    "epochs", "batch_size", "lr", "weight_decay", "label_mode", "label_smoothing",
    "regularization", "sigma", "perturb_prob", "consistency_weight", "mirror",
    "balanced_sampler", "seed", "engine", "alignment_lr", "distill_weight", "init_from",
    "init_classifier", "augment", "augmentation", "appearance_lr", "appearance_freeze_epochs",
    "num_workers", "bf16", "compile",
}  # fmt: skip


def as_config_version_1(experiment: dict) -> dict:
    """An experiment mapping as keyfer 0.2.0 saved it: no ``config_version``, the image engine's
    keys at ``train.*`` and its augmentation in ``augment`` (on or off) and ``augmentation``."""
    train = dict(experiment["train"])
    images = dict(train.pop("images"))
    augment = images.pop("augment")
    train.update(images, augment=augment is not False, augmentation=augment or {})
    assert set(train) == KEYFER_0_2_0_TRAIN_KEYS
    rest = {key: value for key, value in experiment.items() if key != "config_version"}
    return {**rest, "train": train}


@pytest.mark.parametrize("checkpoint_format", [2, 1])
def test_a_checkpoint_of_config_version_1_loads_and_resumes(tmp_path, caplog, checkpoint_format):
    """The experiment saved by keyfer 0.2.0 (checkpoint format 1 or 2) is migrated: the model
    loads, the run resumes with the config it began with, and another config is one line."""
    images = ImagesConfig(augment={"rotation": 5.0}, num_workers=0, appearance_freeze_epochs=2)
    experiment = Experiment(name="tiny", train=TrainConfig(engine="images", images=images))
    path = tmp_path / "checkpoint.pt"
    weights = build_head(experiment.model).state_dict()
    save_checkpoint(path, experiment, {"head": weights, "epoch": 1})

    def as_keyfer_0_2_0(data: dict) -> dict:
        data = {**data, "config": as_config_version_1(data["config"])}
        return as_version_1(data) if checkpoint_format == 1 else data

    rewrite(path, as_keyfer_0_2_0)
    assert "config_version" not in torch.load(path, weights_only=True)["config"]
    with caplog.at_level(logging.WARNING, logger="keyfer"):
        assert load_checkpoint(path)[0] == experiment
    assert "train.augmentation as train.images.augment" in caplog.text
    model = create_model(path)
    for key, value in weights.items():
        assert torch.equal(model.head.state_dict()[key], value)
    assert resume_state(path, experiment)["epoch"] == 1
    changed = replace(experiment, train=replace(experiment.train, images=ImagesConfig()))
    with pytest.raises(KeyferError, match=r"\(train\.images\.appearance_freeze_epochs, .*differ\)"):
        resume_state(path, changed)


def test_a_checkpoint_of_a_newer_config_version_says_what_to_do(tmp_path):
    path = write_checkpoint(tmp_path / "checkpoint.pt")
    rewrite(path, lambda data: {**data, "config": {**data["config"], "config_version": 9}})
    with pytest.raises(KeyferError, match="config_version 9.*resume it with the keyfer") as error:
        resume_state(path, Experiment(name="tiny"))
    assert "\n" not in str(error.value)
    assert create_model(path).info.name == str(path)  # its model still loads
