"""Models that describe themselves: :func:`keyfer.create_model` gives shipped models and
checkpoints alike their classes, temperature, colour mode, pre-crop margin and padding, and the
dataset splits they were trained on; a checkpoint keeps its own, an old-format one is migrated,
a newer one is refused in one line, and resuming a run whose config this keyfer reads
differently says what to do."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from keyfer import ExpressionRecognizer, create_model
from keyfer.data.labels import CLASSES
from keyfer.errors import KeyferError, WeightsError
from keyfer.models.checkpoint import FORMAT_VERSION, read_checkpoint
from keyfer.models.info import ModelInfo
from keyfer.models.registry import get_record
from keyfer.nkf.config import ModelConfig
from keyfer.nkf.model import NKFModel
from keyfer.preprocessing import DEFAULT_MARGIN, DEFAULT_PADDING
from keyfer.train.cached import build_head
from keyfer.train.checkpoint import resume_state, save_checkpoint
from keyfer.train.config import Experiment, TrainConfig
from tests.conftest import EXAMPLE


def write_checkpoint(path: Path, **state) -> Path:
    """A cheap checkpoint: the default architecture with a random head (seed 0), after epoch 1."""
    experiment = Experiment(name="tiny")
    torch.manual_seed(0)
    head = build_head(experiment.model).state_dict()
    save_checkpoint(path, experiment, {"head": head, "epoch": 1, **state})
    return path


def rewrite(path: Path, change) -> None:
    """Apply ``change`` to the checkpoint's contents and write them back."""
    torch.save(change(torch.load(path, weights_only=True)), path)


def as_version_1(data: dict) -> dict:
    """A checkpoint's contents as keyfer 0.2.0 wrote them: no model entry, the temperature a
    top-level tensor."""
    rest = {k: v for k, v in data.items() if k != "model"}
    temperature = torch.tensor(data["model"]["temperature"])
    return {**rest, "format": "keyfer-checkpoint-1", "temperature": temperature}


def test_shipped_model_describes_itself() -> None:
    record = get_record("keyfer-ferplus-fast")
    info = create_model("keyfer-ferplus-fast").info
    assert info == ModelInfo(
        name="keyfer-ferplus-fast",
        classes=tuple(record.classes),
        temperature=record.temperature,
        color_mode="gray3",
        margin=record.preprocessing["precrop_margin"],
        padding=record.preprocessing["precrop_padding"],
        digest=record.digest,
        trained_on=(("ferplus", "train"),),
    )


def test_checkpoint_describes_itself(tmp_path) -> None:
    path = write_checkpoint(tmp_path / "checkpoint.pt", temperature=torch.tensor(1.5))
    assert read_checkpoint(path)["format"] == f"keyfer-checkpoint-{FORMAT_VERSION}"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = ModelInfo(
        str(path), CLASSES, 1.5, "gray3", DEFAULT_MARGIN, DEFAULT_PADDING, digest,
        trained_on=(("ferplus", "train"),),
    )  # fmt: skip
    assert create_model(path).info == expected


def test_checkpoint_trained_on_reads_its_experiments_sources(tmp_path) -> None:
    """An experiment with ``sources`` trained on each one's dataset and split (the train split
    when it names none); one without an experiment says nothing."""
    path = write_checkpoint(tmp_path / "checkpoint.pt")
    sources = [{"dataset": "sfew", "split": "all"}, {"dataset": "tfeid"}, "not a source"]
    rewrite(path, lambda data: {**data, "config": {**data["config"], "sources": sources}})
    assert create_model(path).info.trained_on == (("sfew", "all"), ("tfeid", "train"))
    rewrite(path, lambda data: {k: v for k, v in data.items() if k != "config"})
    assert create_model(path).info.trained_on == ()


def test_checkpoint_keeps_its_own_preprocessing(tmp_path) -> None:
    """A checkpoint's margin and padding are its own, whatever today's defaults are."""
    path = write_checkpoint(tmp_path / "checkpoint.pt")
    rewrite(path, lambda data: {**data, "model": {**data["model"], "margin": 0.35}})
    assert create_model(path).info.margin == 0.35


def test_version_1_checkpoint_is_migrated(tmp_path) -> None:
    """A keyfer 0.2.0 checkpoint loads with that release's classes and pre-crop (margin 0.2,
    edge padding) and its temperature, and the same weights."""
    path = write_checkpoint(tmp_path / "checkpoint.pt", temperature=torch.tensor(1.5))
    current = create_model(path)
    rewrite(path, as_version_1)
    migrated = create_model(path)
    assert migrated.info == replace(current.info, digest=migrated.info.digest)
    assert (migrated.info.margin, migrated.info.padding) == (0.2, "edge")
    for key, value in current.head.state_dict().items():
        assert torch.equal(migrated.head.state_dict()[key], value)


def test_newer_checkpoint_format_is_one_line_naming_its_version(tmp_path) -> None:
    path = write_checkpoint(tmp_path / "checkpoint.pt")
    rewrite(path, lambda data: {**data, "format": "keyfer-checkpoint-99"})
    with pytest.raises(WeightsError, match="format version 99; .*upgrade keyfer") as error:
        create_model(path)
    assert "\n" not in str(error.value)


def test_resume_of_a_run_whose_config_keys_changed_says_what_to_do(tmp_path) -> None:
    """A run begun with a config key this keyfer no longer has (renamed or removed)."""
    path = write_checkpoint(tmp_path / "checkpoint.pt")

    def with_old_key(data: dict) -> dict:
        config = data["config"]
        return {**data, "config": {**config, "train": {**config["train"], "old_key": 1}}}

    rewrite(path, with_old_key)
    with pytest.raises(KeyferError, match="cannot resume .*start the run anew without --resume"):
        resume_state(path, Experiment(name="tiny"))
    assert create_model(path).info.name == str(path)  # its model still loads


def test_resume_with_another_config_names_what_differs(tmp_path) -> None:
    path = write_checkpoint(tmp_path / "checkpoint.pt")
    with pytest.raises(KeyferError, match=r"\(train\.epochs differ\); resume with the same one"):
        resume_state(path, Experiment(name="tiny", train=TrainConfig(epochs=5)))
    assert resume_state(path, Experiment(name="tiny", root="moved"))["epoch"] == 1


def test_recognizer_takes_the_model_create_model_gives() -> None:
    by_name = ExpressionRecognizer("keyfer-ferplus-fast", device="cpu").predict(EXAMPLE)
    model = create_model("keyfer-ferplus-fast")
    by_model = ExpressionRecognizer(model, device="cpu").predict(EXAMPLE)
    assert len(by_model) == len(by_name) > 0
    for a, b in zip(by_name, by_model, strict=True):
        assert a.probabilities == b.probabilities
    bare = NKFModel(ModelConfig())
    with pytest.raises(KeyferError, match="does not describe itself"):
        ExpressionRecognizer(bare, device="cpu")
