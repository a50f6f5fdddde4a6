"""`keyfer eval` with the shipped FERPlus model on every adapter's fixture: the JSON contract,
the restriction to a 7-class dataset's classes, the counts of rows and images left out, and the
refusal to score a model on the split it was trained on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from keyfer.cli import main
from keyfer.data.labels import BASIC_CLASSES
from tests import dataset_fixtures
from tests.conftest import ROOT

FERPLUS = ROOT / "tests/data/ferplus_fixture"
CONTRACT = ("accuracy", "mean_class_accuracy", "macro_f1", "n", "classes", "confusion",
            "restricted_to", "skipped_rows", "excluded_rows", "left_out")  # fmt: skip


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """The adapters' fixtures; FERPlus's with a Valid split copied from its Train split (the
    shipped model is never scored on FERPlus Train, which it was trained on)."""
    fixtures = dataset_fixtures.make_all(tmp_path_factory.mktemp("datasets"))
    ferplus = tmp_path_factory.mktemp("ferplus")
    shutil.copytree(FERPLUS / "data/FER2013Train", ferplus / "data/FER2013Valid")
    return {**fixtures, "ferplus": ferplus}


CASES = [
    ("rafdb", "rafdb", "test", 2, {"missing_image": 1, "bad_label": 1, "malformed_row": 1}, {}),
    ("affectnet", "affectnet", "validation", 3,
     {"missing_image": 1, "bad_label": 1, "bad_box": 1}, {"none": 1, "not_face": 1}),
    ("affectnet7", "affectnet", "validation", 2,
     {"missing_image": 1, "bad_label": 1, "bad_box": 1},
     {"none": 1, "not_face": 1, "contempt": 1}),
    ("fer2013", "fer2013", "publictest", 2,
     {"bad_label": 1, "bad_pixels": 1, "malformed_row": 1}, {}),
    ("fer2013", "fer2013_folders", "test", 2, {}, {}),
    ("ferplus", "ferplus", "valid", 3, {"missing_image": 1},
     {"no_majority": 1, "not_face": 1, "unknown": 1}),
]  # fmt: skip


@pytest.mark.parametrize(("dataset", "fixture", "split", "n", "skipped", "excluded"), CASES)
def test_eval_on_each_adapter(roots, tmp_path, dataset, fixture, split, n, skipped, excluded):
    out = tmp_path / "report.json"
    args = ["eval", "--model", "keyfer-ferplus", "--dataset", dataset, "--root",
            str(roots[fixture]), "--split", split, "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(CONTRACT) <= set(report)
    assert report["n"] == n == sum(map(sum, report["confusion"]))
    assert 0 <= report["accuracy"] <= 1 and len(report["classes"]) == 8
    assert report["skipped_rows"] == skipped and report["excluded_rows"] == excluded
    assert report["left_out"] == {"unreadable": 0, "no_face": 0} and report["images"] == n
    assert f"scored {n} of {n} images\n" in result.output
    seven = dataset in ("rafdb", "affectnet7", "fer2013")
    assert report["restricted_to"] == (list(BASIC_CLASSES) if seven else None)
    assert ("predictions restricted to the dataset's 7 classes" in result.output) == seven
    if seven:
        assert all(row[-1] == 0 for row in report["confusion"])  # contempt is never predicted


def test_eval_split_errors_name_the_choices(roots):
    args = ["eval", "--dataset", "affectnet", "--root", str(roots["affectnet"]), "--split", "test"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "choose --split from train, validation" in result.output


def test_eval_refuses_the_split_the_model_was_trained_on(roots):
    """keyfer-ferplus-fast was trained on FERPlus Train: scoring it there is one line."""
    args = ["eval", "--model", "keyfer-ferplus-fast", "--dataset", "ferplus",
            "--root", str(roots["ferplus"]), "--split", "train"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines() == [
        "Error: keyfer-ferplus-fast was trained on ferplus train: it is not scored on "
        "ferplus/train; score it on another split (e.g. --split valid)"
    ]
