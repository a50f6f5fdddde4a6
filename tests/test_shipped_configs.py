"""The configs shipped in the package: `keyfer train NAME`, `keyfer train --list`, and the data
root of a run from the config, from --root or under $KEYFER_DATA (a resume after the data moved).
Configs of keyfer 0.2.0's key layout (config version 1) are read, trained and resumed."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from keyfer.cli import main
from keyfer.data.augment import AugmentConfig
from keyfer.data.labels import CLASSES
from keyfer.data.roots import DATA_ENV
from keyfer.errors import KeyferError
from keyfer.models.registry import get_record
from keyfer.train.config import (
    CONFIG_VERSION,
    CONFIGS_DIR,
    Experiment,
    ImagesConfig,
    config_summary,
    find_config,
    load_experiment,
    shipped_configs,
)
from keyfer.train.sources import experiment_sources, source_classes
from tests.conftest import needs_real_data
from tests.dataset_fixtures import make_rafdb
from tests.test_models import as_config_version_1


def test_the_shipped_configs_are_in_the_package():
    configs = shipped_configs()
    assert {"quick", "ferplus", "ferplus_appearance", "rafdb", "affectnet8", "multi_domain"} <= set(
        configs
    )
    assert all(path.parent == CONFIGS_DIR and path.suffix == ".yaml" for path in configs.values())
    assert all(config_summary(path) for path in configs.values())


@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_shipped_roots_are_relative_to_keyfer_data(name: str):
    """No shipped root is absolute or climbs out of $KEYFER_DATA (works in one checkout only)."""
    data = yaml.safe_load(shipped_configs()[name].read_text())
    for source in data.get("sources", [data]):
        root = Path(source["root"])
        assert not root.is_absolute() and ".." not in root.parts


@pytest.mark.parametrize("name", ["multi_domain", "multi_domain_rgb"])
def test_the_multi_domain_configs_train_four_domains_balanced(name: str):
    experiment = load_experiment(find_config(name))
    assert [s.dataset for s in experiment.sources] == ["ferplus", "sfew", "tfeid", "muxspace"]
    assert {s.weight for s in experiment.sources} == {1.0} and experiment.train.balanced_sampler
    assert experiment.model.appearance == "both" and experiment.train.engine == "cached"
    rgb = replace(
        experiment, name="multi-domain-rgb", model=replace(experiment.model, color_mode="rgb")
    )
    assert load_experiment(find_config("multi_domain_rgb")) == rgb


def test_the_default_models_recipe_ships_as_a_config():
    """keyfer_multidomain is multi_domain with natural class frequencies and FERPlus at weight 2,
    and its model is the shipped keyfer-multidomain's (whose head then trained 10 epochs more,
    from the same config with the overrides its header gives)."""
    recipe = load_experiment(find_config("keyfer_multidomain"))
    base = load_experiment(find_config("multi_domain"))
    assert [s.weight for s in recipe.sources] == [2.0, 1.0, 1.0, 1.0]
    assert not recipe.train.balanced_sampler
    sources = [replace(s, weight=1.0) for s in recipe.sources]
    train = replace(recipe.train, balanced_sampler=True)
    assert replace(recipe, name=base.name, sources=sources, train=train) == base
    record = get_record("keyfer-multidomain")
    assert record.config == asdict(recipe.model) | {"num_classes": len(CLASSES)}
    assert record.trained_on == [[s.dataset, "train"] for s in recipe.sources]


@needs_real_data("muxspace")
def test_the_multi_domain_sources_keep_contempt_where_it_is_labelled():
    """Contempt is labelled in FERPlus (120 train images) and muxspace (7): their losses keep it,
    while SFEW's and TFEID's are restricted to the seven basic classes."""
    sources = experiment_sources(load_experiment(find_config("multi_domain")))
    allowed = source_classes(sources)
    assert allowed is not None
    contempt = CLASSES.index("contempt")
    assert allowed[:, contempt].tolist() == [True, False, False, True]
    assert allowed[:, :contempt].all()
    train = {data.name: sum(s.label == contempt for s in data.train) for data in sources}
    assert train == {"ferplus": 120, "sfew": 0, "tfeid": 0, "muxspace": 7}
    assert all(data.faces_tag == "" for data in sources)  # the datasets' own faces modes


def test_a_bare_name_is_a_shipped_config_and_anything_else_a_path():
    assert find_config("quick") == shipped_configs()["quick"]
    assert find_config("quick.yaml") == Path("quick.yaml")
    assert find_config("configs/quick") == Path("configs/quick")
    with pytest.raises(KeyferError, match="no shipped config 'quik'; choose from .*quick"):
        find_config("quik")


def test_train_list_names_every_shipped_config():
    result = CliRunner().invoke(main, ["train", "--list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == list(shipped_configs())
    assert lines[list(shipped_configs()).index("quick")].split(None, 1)[1].startswith("A run")


def test_train_without_a_config_is_a_usage_error():
    result = CliRunner().invoke(main, ["train"])
    assert result.exit_code == 2 and "give a CONFIG" in result.output


def test_train_with_an_unknown_name_is_one_line():
    result = CliRunner().invoke(main, ["train", "quik"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no shipped config") and result.output.count("\n") == 1


def test_train_reads_a_relative_root_under_keyfer_data_and_resumes_from_a_moved_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    make_rafdb(tmp_path / "data" / "rafdb")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"name: tiny\ndataset: rafdb\nroot: rafdb\ncache_dir: {tmp_path / 'cache'}\n"
        "model:\n  dim: 8\n  hidden: 16\n  color_mode: rgb\ntrain:\n  epochs: 1\n  batch_size: 2\n"
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["n"] == 2

    moved = shutil.move(tmp_path / "data" / "rafdb", tmp_path / "moved")
    monkeypatch.delenv(DATA_ENV)
    args = ["train", str(config), "--out", str(out), "--resume", str(out / "checkpoint.pt")]
    result = CliRunner().invoke(main, [*args, "--root", str(moved)])
    assert result.exit_code == 0, result.output
    assert "resumed from" in (out / "train.log").read_text()


def test_root_option_replaces_the_config_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)  # an empty cache_dir: the data is read first
    args = ["train", "quick", "--root", "nowhere", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert f"the ferplus root {tmp_path / 'nowhere'} is not a folder" in result.output
    assert load_experiment(find_config("quick")).sources[0].root == "ferplus"


def test_data_root_is_the_base_of_every_source_root(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "datasets"
    args = ["train", "multi_domain", "--data-root", str(base), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert f"the ferplus root {base / 'ferplus'} is not a folder" in result.output
    assert DATA_ENV not in os.environ  # for that run only
    result = CliRunner().invoke(main, ["train", "multi_domain", "--root", "x"])
    assert result.exit_code == 2 and "give --data-root" in result.output


@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_shipped_configs_are_of_the_current_layout(name: str, caplog: pytest.LogCaptureFixture):
    path = shipped_configs()[name]
    assert yaml.safe_load(path.read_text())["config_version"] == CONFIG_VERSION
    with caplog.at_level(logging.WARNING, logger="keyfer"):
        load_experiment(path)
    assert not caplog.records  # no migration note


VERSION_1 = """\
name: old
train:
  engine: images
  epochs: 2
  alignment_lr: 0.0002
  distill_weight: 0.5
  appearance_lr: 0.0003
  appearance_freeze_epochs: 1
  num_workers: 0
  augment: true
  augmentation: {rotation: 5, erase_prob: 0.5}
"""
VERSION_2 = """\
config_version: 2
name: old
train:
  engine: images
  epochs: 2
  images:
    alignment_lr: 0.0002
    distill_weight: 0.5
    appearance_lr: 0.0003
    appearance_freeze_epochs: 1
    num_workers: 0
    augment: {rotation: 5, erase_prob: 0.5}
"""


def test_a_version_1_config_reads_as_its_version_2_with_one_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(VERSION_1)
    new.write_text(VERSION_2)
    with caplog.at_level(logging.WARNING, logger="keyfer"):
        migrated = load_experiment(old, ["train.images.num_workers=2"])  # --set: the new keys
    assert migrated == load_experiment(new, ["train.images.num_workers=2"])
    assert migrated.train.images.augment == {"rotation": 5, "erase_prob": 0.5}
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    note = caplog.records[0].getMessage()
    for key in ("num_workers", "alignment_lr", "augment", "augmentation"):
        assert f"train.{key} as train.images." in note
    assert "\n" not in note


def test_version_1_augment_false_turns_the_augmentation_off():
    off = Experiment.from_dict({"train": {"augment": False, "augmentation": {"rotation": 5}}})
    assert off.train.images.augment is False and off.train.images.augment_config(True) is None
    on = Experiment.from_dict({"train": {"augment": True}}).train.images
    assert on == ImagesConfig() and on.augment_config(False) == AugmentConfig(flip=False)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"train": {"num_workers": 0, "images": {"num_workers": 2}}},
            r"train.images.num_workers given twice, under its old key too \(train.num_workers",
        ),
        (
            {"config_version": 2, "train": {"augmentation": {}}},
            r"unknown keys \['train.augmentation'\]; train.augmentation is now "
            r"train.images.augment$",
        ),
        ({"config_version": 3}, "config_version 3; this keyfer reads versions 1 to 2: upgrade"),
        ({"train": {"images": {"spin": 1}}}, r"unknown keys \['train.images.spin'\]$"),
        ({"train": {"augmentation": {"spin": 3}}}, r"unknown train.images.augment keys \['spin'\]"),
        ({"train": {"images": {"augment": 1}}}, r"train.images.augment = 1 \(int\); expected dict"),
    ],
)
def test_config_layout_errors_are_one_line(data: dict, message: str):
    with pytest.raises(KeyferError, match=message) as error:
        Experiment.from_dict(data)
    assert "\n" not in str(error.value)


def test_set_names_the_new_key_of_an_old_one():
    with pytest.raises(KeyferError, match="train.num_workers is now train.images.num_workers"):
        load_experiment(find_config("quick"), ["train.num_workers=0"])


def test_train_and_resume_a_run_begun_with_a_version_1_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """``keyfer train old.yaml`` trains, and its run, begun before the config keys moved (its
    checkpoint's experiment of version 1), resumes with the old config or its new spelling."""
    make_rafdb(tmp_path / "rafdb")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    common = f"name: tiny\ndataset: rafdb\nroot: rafdb\ncache_dir: {tmp_path / 'cache'}\n"
    common += "model:\n  dim: 8\n  hidden: 16\n  color_mode: rgb\ntrain:\n  epochs: 1\n"
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(common + "  num_workers: 0\n  augmentation: {rotation: 5}\n")
    new.write_text(common + "  images:\n    num_workers: 0\n    augment: {rotation: 5}\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(old), "--out", str(out)])
    assert result.exit_code == 0, result.output
    checkpoint = out / "checkpoint.pt"
    data = torch.load(checkpoint, weights_only=True)
    torch.save({**data, "config": as_config_version_1(data["config"])}, checkpoint)
    for config in (old, new):
        args = ["train", str(config), "--out", str(out), "--resume", str(checkpoint)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    assert (out / "train.log").read_text().count("resumed from") == 2
