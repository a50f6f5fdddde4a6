"""`keyfer train` on the other adapters, a new classifier on a loaded head (init_from with
init_classifier false), and the class-balanced sampler of the image engine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from keyfer.cli import main
from keyfer.data.datasets import DATASETS
from keyfer.data.labels import CLASSES, Sample, one_hot
from keyfer.errors import KeyferError, WeightsError
from keyfer.nkf.config import ModelConfig
from keyfer.train.cached import CachedData, CachedTrainer, build_head
from keyfer.train.checkpoint import init_head, save_checkpoint
from keyfer.train.config import (
    Experiment,
    ImagesConfig,
    TrainConfig,
    load_experiment,
    shipped_configs,
)
from keyfer.train.crops import build_crop_cache
from keyfer.train.images import ImageTrainer
from tests.dataset_fixtures import make_rafdb

SMALL = ModelConfig(dim=8, hidden=16)


def test_train_on_rafdb_scores_its_test_split_and_skips_unreadable_images(tmp_path: Path):
    root = make_rafdb(tmp_path / "rafdb")
    (root / "Image/aligned/train_00002_aligned.jpg").write_bytes(b"not a jpeg")
    config = tmp_path / "rafdb.yaml"
    config.write_text(
        f"name: tiny\ndataset: rafdb\nroot: {root}\ncache_dir: {tmp_path / 'cache'}\n"
        "model:\n  dim: 8\n  hidden: 16\n  color_mode: rgb\n"
        "train:\n  epochs: 1\n  batch_size: 2\n  balanced_sampler: true\n"
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 2  # RAF-DB test
    assert "contempt" not in metrics["restricted_to"] and len(metrics["restricted_to"]) == 7
    assert sum(row[CLASSES.index("contempt")] for row in metrics["confusion"]) == 0
    caches = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert caches == [f"rafdb-{split}-ibug68-s0.05-m0.2-rgb" for split in ("test", "train")]
    assert "1 of 2 images left out: 1 unreadable" in (out / "train.log").read_text()


def test_training_needs_a_dataset_with_splits(tmp_path: Path):
    with pytest.raises(KeyferError, match="cannot train on 'folder'"):
        Experiment(dataset="folder")
    with pytest.raises(KeyferError, match="unknown dataset 'raf'"):
        Experiment(dataset="raf")


def _saved_head(tmp_path: Path, model: ModelConfig = SMALL) -> tuple[Path, dict]:
    torch.manual_seed(1)
    head = build_head(model)
    path = tmp_path / "affectnet8.pt"
    save_checkpoint(path, Experiment(model=model), {"head": head.state_dict(), "epoch": 1})
    return path, head.state_dict()


def test_init_without_classifier_keeps_the_body_and_a_fresh_output_layer(tmp_path: Path):
    path, saved = _saved_head(tmp_path)
    torch.manual_seed(2)
    head = build_head(SMALL)
    fresh = {k: v.clone() for k, v in head.state_dict().items()}
    init_head(head, path, classifier=False)
    output = head.output_keys()
    assert output == {"classifier.4.weight", "classifier.4.bias"}
    assert head.classifier[4].out_features == len(CLASSES)
    for key, value in head.state_dict().items():
        expected = fresh[key] if key in output else saved[key]
        assert torch.equal(value, expected), key
    init_head(head, path)
    assert all(torch.equal(v, saved[k]) for k, v in head.state_dict().items())


def _image_trainer(tmp_path: Path, labels: list[int], train: TrainConfig) -> ImageTrainer:
    """An image-engine trainer on copies of one real face, labelled ``labels``."""
    face = make_rafdb(tmp_path / "rafdb") / "Image/aligned/train_00001_aligned.jpg"
    samples = [Sample(face, label, one_hot(label)) for label in labels]
    crops = build_crop_cache(samples, tmp_path / "crops", "gray3", 0.2, "edge")
    return ImageTrainer(Experiment(model=SMALL, train=train), samples, crops, torch.device("cpu"))


def test_both_engines_start_from_init_from(tmp_path: Path):
    path, saved = _saved_head(tmp_path)
    train = TrainConfig(
        epochs=1,
        batch_size=2,
        init_from=str(path),
        init_classifier=False,
        images=ImagesConfig(num_workers=0),
    )
    data = CachedData(
        torch.zeros(4, 4, 68, 368, dtype=torch.float16),
        torch.zeros(4, 2, 128, dtype=torch.float16),
        torch.tensor([0, 1, 1, 1]),
        torch.eye(8)[[0, 1, 1, 1]],
    )
    cached = CachedTrainer(SMALL, train, data).head.state_dict()
    images = _image_trainer(tmp_path, [0, 1], train).model.head.state_dict()
    for state in (cached, images):
        assert torch.equal(state["project.0.weight"], saved["project.0.weight"])
        assert not torch.equal(state["classifier.4.weight"], saved["classifier.4.weight"])


def test_init_from_another_architecture_is_a_clear_error(tmp_path: Path):
    path, _ = _saved_head(tmp_path, ModelConfig(dim=4, hidden=16))
    with pytest.raises(WeightsError, match="does not fit this model config"):
        init_head(build_head(SMALL), path)


def test_image_engine_balanced_sampler_draws_classes_equally(tmp_path: Path):
    labels = [0] * 30 + [1] * 3 + [4] * 3
    train = TrainConfig(
        epochs=1, batch_size=12, balanced_sampler=True, images=ImagesConfig(num_workers=0)
    )
    trainer = _image_trainer(tmp_path, labels, train)
    drawn = torch.cat([batch_labels for _ in range(10) for _, batch_labels, *_ in trainer.loader])
    counts = torch.bincount(drawn, minlength=8)[[0, 1, 4]]
    assert counts.min() > 0.75 * len(drawn) / 3


@pytest.mark.parametrize("path", sorted(shipped_configs().values()), ids=lambda p: p.stem)
def test_recipes_load(path: Path):
    experiment = load_experiment(path)
    assert all(source.dataset in DATASETS for source in experiment.sources)
    if experiment.sources[0].dataset.startswith("affectnet"):
        assert experiment.train.balanced_sampler
    if path.stem.endswith("_from_affectnet8"):
        assert experiment.train.init_from == "runs/affectnet8/checkpoint.pt"
        assert not experiment.train.init_classifier
        pretrained = load_experiment(shipped_configs()["affectnet8"]).model
        # The head's shapes must match; the colour mode only changes the input images.
        assert experiment.model == replace(pretrained, color_mode=experiment.model.color_mode)


def test_an_interrupted_crop_cache_build_leaves_no_partial_folder(tmp_path: Path, monkeypatch):
    face = make_rafdb(tmp_path / "rafdb") / "Image/aligned/train_00001_aligned.jpg"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("keyfer.train.crops.sample_crop", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_crop_cache([Sample(face, 0, one_hot(0))], tmp_path / "crops", "gray3", 0.2, "edge")
    assert not any(tmp_path.glob("crops*"))
