"""The configs shipped in the package: `keyfer train NAME`, `keyfer train --list`, and the data
root of a run from the config, from --root or under $KEYFER_DATA (a resume after the data moved)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from keyfer.cli import main
from keyfer.data.roots import DATA_ENV
from keyfer.errors import KeyferError
from keyfer.train.config import (
    CONFIGS_DIR,
    config_summary,
    find_config,
    load_experiment,
    shipped_configs,
)
from tests.dataset_fixtures import make_rafdb


def test_the_shipped_configs_are_in_the_package():
    configs = shipped_configs()
    assert {"quick", "ferplus", "ferplus_appearance", "rafdb", "affectnet8"} <= set(configs)
    assert all(path.parent == CONFIGS_DIR and path.suffix == ".yaml" for path in configs.values())
    assert all(config_summary(path) for path in configs.values())


@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_shipped_roots_are_relative_to_keyfer_data(name: str):
    """No shipped root is absolute or climbs out of $KEYFER_DATA (works in one checkout only)."""
    root = Path(yaml.safe_load(shipped_configs()[name].read_text())["root"])
    assert not root.is_absolute() and ".." not in root.parts


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
    assert load_experiment(find_config("quick")).root == "ferplus"
