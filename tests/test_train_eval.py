"""Checkpoints, configs, `keyfer train` on a tiny cache, and the `keyfer eval` contract."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from keyfer.cli import main
from keyfer.data.ferplus import load_ferplus
from keyfer.errors import KeyferError, WeightsError
from keyfer.train.cached import build_head
from keyfer.train.checkpoint import load_checkpoint, save_checkpoint
from keyfer.train.config import Experiment, load_experiment
from tests.conftest import ROOT
from tests.interruption import interrupted_in_second_epoch

FIXTURE = ROOT / "tests/data/ferplus_fixture"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    experiment = Experiment(name="tiny")
    torch.manual_seed(0)
    head = build_head(experiment.model)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_checkpoint(
        path, experiment, {"head": head.state_dict(), "epoch": 1, "temperature": torch.tensor(1.5)}
    )
    return path


def test_checkpoint_round_trip(checkpoint):
    experiment, state = load_checkpoint(checkpoint)
    assert experiment == Experiment(name="tiny")
    head = build_head(experiment.model)
    head.load_state_dict(state["head"])
    assert state["model"]["temperature"] == 1.5


def test_wrong_checkpoint_files_are_clear_errors(tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a keyfer checkpoint"):
        load_checkpoint(bogus)
    torch.save({"state": 1}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="format tag"):
        load_checkpoint(tmp_path / "other.pt")


def test_config_overrides_and_bad_configs(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: x\nmodel:\n  dim: 32\n")
    experiment = load_experiment(config, ["train.epochs=3", "model.rkfa=both"])
    assert (experiment.model.dim, experiment.model.rkfa, experiment.train.epochs) == (32, "both", 3)
    with pytest.raises(KeyferError, match="unknown keys"):
        load_experiment(config, ["modle.dim=3"])
    with pytest.raises(KeyferError, match="regularization"):
        load_experiment(config, ["train.regularization=dropout"])
    config.write_text("model: [unclosed\n")
    with pytest.raises(KeyferError, match="cannot read config"):
        load_experiment(config)


def _valid_root(tmp_path):
    """The fixture with a Valid split copied from its Train split: a checkpoint trained on
    FERPlus Train is not scored there."""
    root = tmp_path / "ferplus-valid"
    if not root.is_dir():
        shutil.copytree(FIXTURE / "data/FER2013Train", root / "data/FER2013Valid")
    return root


def _eval(checkpoint, tmp_path, name):
    out = tmp_path / f"{name}.json"
    args = [
        "eval",
        "--model",
        str(checkpoint),
        "--dataset",
        "ferplus",
        "--root",
        str(_valid_root(tmp_path)),
        "--split",
        "valid",
        "--json",
        str(out),
        "--plots",
        str(tmp_path / "plots"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_eval_writes_the_contract_and_is_deterministic(checkpoint, tmp_path):
    first = _eval(checkpoint, tmp_path, "a")
    for key in ("accuracy", "mean_class_accuracy", "macro_f1", "n", "classes", "confusion"):
        assert key in first
    assert 0 <= first["accuracy"] <= 1
    assert first["n"] == sum(map(sum, first["confusion"]))
    assert first["classes"][0] == "neutral" and len(first["classes"]) == 8
    assert (tmp_path / "plots/ferplus_valid_confusion.png").is_file()
    assert (tmp_path / "plots/ferplus_valid_report.txt").is_file()
    assert _eval(checkpoint, tmp_path, "b") == first


def test_eval_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--model",
            "no-such-model",
            "--dataset",
            "ferplus",
            "--root",
            str(FIXTURE),
            "--split",
            "test",
        ],
    )
    assert result.exit_code == 1
    assert "unknown model" in result.output and "Traceback" not in result.output


def _tiny_config(tmp_path):
    root = tmp_path / "ferplus"
    shutil.copytree(FIXTURE, root)
    valid = root / "data/FER2013Valid"
    shutil.copytree(root / "data/FER2013Train", valid)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"name: tiny\nroot: {root}\ncache_dir: {tmp_path / 'cache'}\n"
        "model:\n  dim: 8\n  hidden: 16\ntrain:\n  epochs: 2\n  batch_size: 4\n"
    )
    return config


def _train_args(config, out, sets: list[str]) -> list[str]:
    """``keyfer train CONFIG --out OUT`` with a ``--set`` for each override."""
    return ["train", str(config), "--out", str(out), *(a for v in sets for a in ("--set", v))]


def test_quick_training_runs_end_to_end_on_a_tiny_cache(tmp_path):
    config = _tiny_config(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["temperature"] > 0 and "ece_after" in metrics
    assert "epoch 2/2" in (out / "train.log").read_text()
    changed = CliRunner().invoke(
        main,
        [
            "train",
            str(config),
            "--out",
            str(out),
            "--resume",
            str(out / "checkpoint.pt"),
            "--set",
            "train.epochs=3",
        ],
    )
    assert changed.exit_code == 1 and "different config" in changed.output


def test_resume_continues_an_interrupted_run(tmp_path):
    config = _tiny_config(tmp_path)
    out = tmp_path / "run"
    with interrupted_in_second_epoch():
        interrupted = CliRunner().invoke(main, ["train", str(config), "--out", str(out)])
    assert interrupted.exit_code != 0
    resume = ["train", str(config), "--out", str(out), "--resume", str(out / "checkpoint.pt")]
    resumed = CliRunner().invoke(main, resume)
    assert resumed.exit_code == 0, resumed.output
    log = (out / "train.log").read_text()
    assert "resumed from" in log and "epoch 1/2" in log and "epoch 2/2" in log


def test_image_engine_fine_tunes_facemesh_and_eval_loads_it(tmp_path):
    config = _tiny_config(tmp_path)
    out = tmp_path / "run"
    sets = [
        "train.engine=images",
        "model.finetune_alignment=true",
        "train.epochs=1",
        "train.batch_size=2",
        "train.images.num_workers=0",
        "train.regularization=augment",
    ]
    args = _train_args(config, out, sets)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert "facemesh" in state
    from keyfer.faces.facemesh import FaceMesh

    original = FaceMesh.from_pretrained().state_dict()["stem.weight"]
    assert not torch.equal(state["facemesh"]["stem.weight"], original)
    report = _eval(out / "checkpoint.pt", tmp_path, "tuned")
    assert report["n"] == len(load_ferplus(FIXTURE, "train").samples)


def test_eval_on_a_class_folder_restricts_to_its_classes(checkpoint, tmp_path):
    """The fixture's images are synthetic gradients, not faces: scored as pre-cropped."""
    images = sorted((FIXTURE / "data/FER2013Train").glob("*.png"))
    for name, image in zip(["happy", "Angry", "happy"], images, strict=False):
        (tmp_path / "faces" / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, tmp_path / "faces" / name / image.name)
    out = tmp_path / "folder.json"
    args = ["eval", "--model", str(checkpoint), "--dataset", "folder",
            "--root", str(tmp_path / "faces"), "--faces", "precropped",
            "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n"] == 3 and report["restricted_to"] == ["happiness", "anger"]
    confusion = report["confusion"]
    predicted = [sum(row[j] for row in confusion) for j in range(8)]
    assert sum(predicted[j] for j in (1, 4)) == 3  # only happiness or anger are predicted


def test_models_lists_the_shipped_model():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0
    assert "keyfer-ferplus: 8 classes" in result.output
    default = next(line for line in result.output.splitlines() if "(default)" in line)
    assert default.startswith("keyfer-multidomain (default): 8 classes")
    assert "trained on ferplus, sfew, tfeid, muxspace" in default


def test_balanced_sampler_and_soft_labels_train(tmp_path):
    config = _tiny_config(tmp_path)
    sets = ["train.balanced_sampler=true", "train.label_mode=probability",
            "train.regularization=none", "model.rkfa=both", "model.head=attention"]  # fmt: skip
    args = ["train", str(config), "--out", str(tmp_path / "run")]
    for value in sets:
        args += ["--set", value]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run/metrics.json").read_text())["n"] > 0


def test_ferplus_eval_never_restricts_classes_even_when_a_split_lacks_some(checkpoint, tmp_path):
    # The split (the fixture's train split) holds only 3 of the 8 classes; FERPlus has all 8.
    report = _eval(checkpoint, tmp_path, "all-classes")
    assert report["restricted_to"] is None


def test_cached_engine_trains_a_head_on_fused_appearance_features(tmp_path):
    config = _tiny_config(tmp_path)
    out = tmp_path / "run"
    sets = ["model.appearance=both", "model.appearance_taps=[level3, level2]"]
    args = _train_args(config, out, sets)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    caches = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert any(name.endswith("-dlib-level3-level2-level1") for name in caches)
    # The head trained on caches scores the same images end to end through the dlib branch.
    report = _eval(out / "checkpoint.pt", tmp_path, "fused")
    metrics = json.loads((out / "metrics.json").read_text())
    assert report["n"] == metrics["n"]
    assert report["accuracy"] == pytest.approx(metrics["accuracy"], abs=1.5 / metrics["n"])


def test_cached_engine_fine_tunes_dlibs_upper_levels_on_level3_caches(tmp_path):
    config = _tiny_config(tmp_path)
    out = tmp_path / "run"
    sets = ["model.appearance=both", "model.appearance_taps=[level3, level2]",
            "model.finetune_appearance=true", "train.images.appearance_lr=0.01"]  # fmt: skip
    result = CliRunner().invoke(main, _train_args(config, out, sets))
    assert result.exit_code == 0, result.output
    caches = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert sum(name.endswith("-dlib-level3-maps") for name in caches) == 2  # train and valid
    from keyfer.faces.dlib_resnet import DlibResNet

    original = DlibResNet.from_pretrained().state_dict()
    tuned = torch.load(out / "checkpoint.pt", weights_only=True)["appearance"]
    for kept in ("stem_conv.weight", "level4.0.conv1.weight", "level3.3.conv2.weight"):
        assert torch.equal(tuned[f"network.{kept}"], original[kept])
    for trained in ("level2.0.conv1.weight", "level1.2.conv2.weight", "level0.0.conv1.weight"):
        assert not torch.equal(tuned[f"network.{trained}"], original[trained])
    # The fine-tuned levels serve end to end: keyfer eval through the whole network agrees.
    report = _eval(out / "checkpoint.pt", tmp_path, "upper")
    metrics = json.loads((out / "metrics.json").read_text())
    assert report["n"] == metrics["n"]
    assert report["accuracy"] == pytest.approx(metrics["accuracy"], abs=1.5 / metrics["n"])
    below = CliRunner().invoke(
        main, _train_args(config, tmp_path / "below", [*sets, "model.appearance_taps=[level4]"])
    )
    assert below.exit_code == 1 and "use train.engine=images" in below.output


def test_image_engine_fine_tunes_the_appearance_branch_after_a_frozen_epoch(tmp_path):
    config = _tiny_config(tmp_path)
    out = tmp_path / "run"
    sets = [
        "train.engine=images",
        "model.appearance=keypoints",
        "model.finetune_appearance=true",
        "train.images.appearance_freeze_epochs=1",
        "train.epochs=2",
        "train.batch_size=2",
        "train.images.num_workers=0",
        "train.images.augment={rotation: 5, erase_prob: 0.5}",
    ]
    args = _train_args(config, out, sets)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    from keyfer.faces.dlib_resnet import DlibResNet

    state = torch.load(out / "checkpoint.pt", weights_only=True)
    original = DlibResNet.from_pretrained().state_dict()["stem_conv.weight"]
    assert not torch.equal(state["appearance"]["network.stem_conv.weight"], original)
    frozen_run = CliRunner().invoke(
        main, [*args, "--out", str(tmp_path / "frozen"), "--set", "train.epochs=1"]
    )
    assert frozen_run.exit_code == 0, frozen_run.output
    frozen = torch.load(tmp_path / "frozen/checkpoint.pt", weights_only=True)
    assert torch.equal(frozen["appearance"]["network.stem_conv.weight"], original)
    bad = CliRunner().invoke(
        main, ["train", str(config), "--out", str(out), "--set", "train.images.augment={spin: 3}"]
    )
    assert bad.exit_code == 1 and "unknown train.images.augment keys ['spin']" in bad.output
