"""Dataset roots: absolute as given, relative under ``$KEYFER_DATA`` when set, else under the
current folder; a missing root says how to point keyfer at the data."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from keyfer.cli import main
from keyfer.data.datasets import load_split
from keyfer.data.roots import DATA_ENV, data_root
from keyfer.errors import KeyferError


def test_relative_roots_are_under_keyfer_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_root("ferplus") == tmp_path / "ferplus"
    assert data_root(Path("rafdb/basic")) == tmp_path / "rafdb" / "basic"
    assert data_root(tmp_path / "elsewhere") == tmp_path / "elsewhere"


@pytest.mark.parametrize("value", [None, ""])
def test_without_keyfer_data_relative_roots_are_under_the_current_folder(
    monkeypatch: pytest.MonkeyPatch, value: str | None
):
    if value is None:
        monkeypatch.delenv(DATA_ENV, raising=False)
    else:
        monkeypatch.setenv(DATA_ENV, value)
    assert data_root("ferplus") == Path("ferplus")


def test_home_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(DATA_ENV, "~/data")
    assert data_root("ferplus") == tmp_path / "data" / "ferplus"
    assert data_root("~/afw") == tmp_path / "afw"


def test_a_missing_root_says_how_to_find_the_data(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyferError, match=f"not a folder; pass --root, or set {DATA_ENV}"):
        load_split("ferplus", "ferplus", "valid")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    with pytest.raises(KeyferError, match=f"root .*data/ferplus is not a folder; .*{DATA_ENV}="):
        load_split("ferplus", "ferplus", "valid")


def test_eval_reads_a_relative_root_under_keyfer_data(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """`keyfer eval --root photos` with KEYFER_DATA set reads $KEYFER_DATA/photos."""
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    args = ["eval", "--model", "keyfer-ferplus-fast", "--dataset", "folder", "--root", "photos"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert f"the folder root {tmp_path / 'photos'} is not a folder" in result.output
