"""Training on several sources: the ``sources`` config, the sampler's rule (balanced by source and
by class), the loss restricted to each source's classes, per-domain metrics with the split
calibration, and ``keyfer eval`` of a multi-source checkpoint, domain by domain."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from keyfer.cli import main
from keyfer.data import splits
from keyfer.data.labels import BASIC_CLASSES, CLASSES
from keyfer.data.roots import DATA_ENV
from keyfer.errors import KeyferError
from keyfer.io.images import read_image
from keyfer.models.registry import create_model
from keyfer.train.cached import build_head
from keyfer.train.checkpoint import load_checkpoint, resume_state, save_checkpoint
from keyfer.train.config import Experiment, Source, TrainConfig, load_experiment
from keyfer.train.distributed import Shard
from keyfer.train.losses import nkf_loss, restricted_cross_entropy
from keyfer.train.sampler import GlobalBatchSampler, draw_weights, drawn_counts
from keyfer.train.sources import SourceData
from keyfer.train.validation import calibration_halves
from tests.conftest import EXAMPLE
from tests.interruption import interrupted_in_second_epoch

CONTEMPT = CLASSES.index("contempt")

# --- the config -------------------------------------------------------------------------------


def test_sources_are_read_with_their_splits_filled_in(tmp_path: Path):
    config = tmp_path / "two.yaml"
    config.write_text(
        "sources:\n"
        "  - {dataset: ferplus, root: ferplus}\n"
        "  - {dataset: sfew, root: photos/sfew, faces: detect, weight: 2, train_subset: 50}\n"
    )
    ferplus, sfew = load_experiment(config).sources
    assert ferplus == Source("ferplus", "ferplus", "train", "valid", None, 1.0, None, "ferplus")
    assert sfew == Source("sfew", "photos/sfew", "train", "valid", "detect", 2.0, 50, "sfew")


def test_the_one_source_form_is_one_source_and_saves_as_sources():
    old = Experiment.from_dict({"dataset": "rafdb", "root": "rafdb/basic", "train_subset": 9})
    assert old.sources == [Source("rafdb", "rafdb/basic", train_subset=9)]
    assert old == Experiment(sources=[Source("rafdb", "rafdb/basic", train_subset=9)])
    assert (old.dataset, old.root, old.train_subset) == (None, None, None)
    saved = old.to_dict()
    assert "dataset" not in saved and saved["sources"][0]["split"] == "train"
    assert Experiment.from_dict(saved) == old
    assert Experiment().sources == [Source("ferplus", "ferplus")]  # the defaults of 0.2.0


def test_with_sources_changes_every_source():
    experiment = Experiment(sources=[Source("ferplus", "a"), Source("tfeid", "b")])
    changed = experiment.with_sources(faces="detect")
    assert [s.faces for s in changed.sources] == ["detect", "detect"]
    assert [s.faces for s in experiment.sources] == [None, None]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sources": [{"dataset": "sfew"}]}, r"missing keys \['sources\[0\].root'\]$"),
        (
            {"sources": [{"dataset": "sfew", "root": "s", "weigth": 2}]},
            r"unknown keys \['sources\[0\].weigth'\]$",
        ),
        ({"sources": [{"dataset": "sfew", "root": "s", "weight": 0}]}, "must be positive"),
        ({"sources": [{"dataset": "folder", "root": "s"}]}, "no train and evaluation splits"),
        ({"sources": [{"dataset": "sfew", "root": "s", "faces": "eyes"}]}, "faces 'eyes'"),
        ({"sources": [{"dataset": "sfew", "root": "s", "split": "all"}]}, "images it trains on"),
        ({"sources": [{"dataset": "sfew", "root": "s", "eval_split": "test"}]}, "no eval_split"),
        ({"sources": "sfew"}, r"sources = 'sfew' \(str\); expected list\[Source\]$"),
        (
            {"dataset": "sfew", "sources": [{"dataset": "sfew", "root": "s"}]},
            "give sources, or one source as dataset, root and train_subset, not both",
        ),
        (
            {"sources": [{"dataset": "sfew", "root": "a"}, {"dataset": "sfew", "root": "b"}]},
            "sources named sfew twice",
        ),
    ],
)
def test_source_errors_are_one_line(data: dict, message: str):
    with pytest.raises(KeyferError, match=message) as error:
        Experiment.from_dict(data)
    assert "\n" not in str(error.value)


def test_an_old_checkpoint_of_one_dataset_loads_and_resumes(tmp_path: Path):
    """A checkpoint saved before sources existed names ``dataset``, ``root`` and
    ``train_subset``: it loads as one source, and resumes with a moved root."""
    experiment = Experiment(name="tiny", sources=[Source("ferplus", "ferplus", train_subset=5)])
    path = tmp_path / "checkpoint.pt"
    state = {"head": build_head(experiment.model).state_dict(), "epoch": 1}
    save_checkpoint(path, experiment, state)
    data = torch.load(path, weights_only=True)
    config = {key: value for key, value in data["config"].items() if key != "sources"}
    config.update(dataset="ferplus", root="ferplus", train_subset=5)
    torch.save({**data, "config": config}, path)
    assert load_checkpoint(path)[0] == experiment
    moved = experiment.with_sources(root="/elsewhere/ferplus")
    assert resume_state(path, moved)["epoch"] == 1
    with pytest.raises(KeyferError, match=r"\(sources differ\)"):
        resume_state(path, experiment.with_sources(weight=2.0))


def test_cache_names_keep_the_names_of_before_and_tell_crops_apart():
    ferplus = Source("ferplus", "ferplus")

    def stem(source: Source, tag: str = "") -> str:
        return SourceData(source, [], [], list(CLASSES), tag).cache_stem(str(source.split))

    assert stem(ferplus) == "ferplus-train"  # ferplus-train-ibug68-s0.05-m0.2, as before
    assert stem(Source("ferplus", "f", train_subset=3000)) == "ferplus-train-n3000"
    assert stem(Source("sfew", "s", faces="precropped"), "-precropped") == "sfew-train-precropped"
    valid = SourceData(Source("ferplus", "f", train_subset=3), [], [], list(CLASSES), "")
    assert valid.cache_stem("valid") == "ferplus-valid"


# --- the sampler -------------------------------------------------------------------------------


def _rows() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sources: 0 with 60 neutral, 30 happiness and 10 contempt rows; 1 with 5 neutral and
    15 anger rows (no contempt)."""
    source = torch.tensor([0] * 100 + [1] * 20)
    labels = torch.tensor([0] * 60 + [1] * 30 + [CONTEMPT] * 10 + [0] * 5 + [4] * 15)
    return source, labels


def test_the_rule_picks_a_source_by_weight_then_a_class_then_an_image():
    source, labels = _rows()
    weights = draw_weights(source, labels, [1.0, 3.0], balanced=True)
    assert weights is not None and float(weights.sum()) == pytest.approx(1.0)
    # P(row) = weight share x 1 / (the source's classes) x 1 / (its images of the class)
    assert float(weights[0]) == pytest.approx(0.25 / 3 / 60)
    assert float(weights[95]) == pytest.approx(0.25 / 3 / 10)
    assert float(weights[100]) == pytest.approx(0.75 / 2 / 5)
    assert float(weights[119]) == pytest.approx(0.75 / 2 / 15)
    unbalanced = draw_weights(source, labels, [1.0, 3.0], balanced=False)
    assert unbalanced is not None
    assert float(unbalanced[0]) == pytest.approx(0.25 / 100)
    assert float(unbalanced[100]) == pytest.approx(0.75 / 20)


def test_one_source_keeps_the_sampling_of_before():
    source, labels = _rows()
    one = torch.zeros_like(source)
    assert draw_weights(one, labels, [1.0], balanced=False) is None  # a permutation
    balanced = draw_weights(one, labels, [1.0], balanced=True)
    assert balanced is not None
    assert torch.equal(balanced, 1.0 / torch.bincount(labels).float()[labels])


def test_drawn_frequencies_follow_the_rule_and_are_counted():
    source, labels = _rows()
    names = ["big", "small"]

    def epochs(seed: int) -> list[dict]:
        weights = draw_weights(source, labels, [1.0, 3.0], balanced=True)
        sampler = GlobalBatchSampler(
            len(labels), 16, torch.Generator().manual_seed(seed), False, weights
        )
        seen = []
        for _ in range(50):
            rows = torch.tensor([row for batch in sampler for row in batch])
            assert torch.equal(rows, sampler.drawn)
            seen.append(drawn_counts(sampler.drawn, source, labels, names))
        return seen

    seen = epochs(0)
    assert epochs(0) == seen and epochs(1) != seen  # deterministic with the seed
    assert all(sum(e[n]["images"] for n in names) == len(labels) for e in seen)
    assert set(seen[0]["small"]["classes"]) == {"neutral", "anger"}  # its classes, no contempt
    total = 50 * len(labels)
    small = sum(e["small"]["images"] for e in seen) / total
    assert small == pytest.approx(0.75, abs=0.02)
    for name, classes in (
        ("big", ("neutral", "happiness", "contempt")),
        ("small", ("neutral", "anger")),
    ):
        drawn = [sum(e[name]["classes"][c] for e in seen) for c in classes]
        share = np.array(drawn) / sum(drawn)
        assert share == pytest.approx(1 / len(classes), abs=0.03), name


# --- the loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("regularization", ["none", "augment", "consistency"])
@pytest.mark.parametrize(
    ("label_mode", "smoothing"), [("majority", 0.0), ("majority", 0.1), ("probability", 0.0)]
)
def test_a_source_without_a_class_gives_it_no_gradient(regularization, label_mode, smoothing):
    torch.manual_seed(0)
    logits = torch.randn(6, len(CLASSES), requires_grad=True)
    moved_shift = torch.randn(6, len(CLASSES))
    labels = torch.tensor([0, 1, CONTEMPT, 2, 3, 4])
    targets = F.one_hot(labels, len(CLASSES)).float()
    allowed = torch.ones(6, len(CLASSES), dtype=torch.bool)
    allowed[3:, CONTEMPT] = False  # rows 3-5: a source without contempt
    train = TrainConfig(
        regularization=regularization, label_mode=label_mode, label_smoothing=smoothing
    )

    def logits_for(moved: torch.Tensor) -> torch.Tensor:
        return logits + moved[:, None] * moved_shift

    loss = nkf_loss(
        train, logits_for, labels, targets, torch.Generator().manual_seed(0), Shard.of(6), allowed
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad is not None
    assert torch.all(logits.grad[3:, CONTEMPT] == 0)
    assert torch.all(logits.grad[:3, CONTEMPT] != 0)  # a source with contempt learns it


def test_the_restricted_loss_is_the_cross_entropy_over_the_source_classes():
    torch.manual_seed(0)
    logits = torch.randn(5, len(CLASSES))
    labels = torch.tensor([0, 1, 2, 3, 6])
    allowed = torch.ones(5, len(CLASSES), dtype=torch.bool)
    target = F.one_hot(labels, len(CLASSES)).float()
    loss = restricted_cross_entropy(logits, target, allowed, 0.1)
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, labels, label_smoothing=0.1)))
    allowed[:, CONTEMPT] = False
    seven = restricted_cross_entropy(logits, target, allowed, 0.1)
    basic = F.cross_entropy(logits[:, :CONTEMPT], labels, label_smoothing=0.1)  # contempt is last
    assert float(seven) == pytest.approx(float(basic))


def test_all_classes_present_leaves_the_loss_as_before():
    torch.manual_seed(0)
    logits = torch.randn(4, len(CLASSES))
    labels = torch.tensor([0, 1, 2, CONTEMPT])
    targets = F.one_hot(labels, len(CLASSES)).float()
    train = TrainConfig(regularization="consistency", label_smoothing=0.05)

    def loss(allowed: torch.Tensor | None) -> torch.Tensor:
        def logits_for(moved: torch.Tensor) -> torch.Tensor:
            return logits + moved[:, None].float()

        generator = torch.Generator().manual_seed(0)
        return nkf_loss(train, logits_for, labels, targets, generator, Shard.of(4), allowed)

    before = F.cross_entropy(logits + 1, labels, label_smoothing=0.05)
    assert torch.equal(loss(torch.ones(4, len(CLASSES), dtype=torch.bool)), loss(None))
    assert float(loss(None)) == pytest.approx(float(before), abs=1e-6)


# --- two tiny sources, end to end -------------------------------------------------------------


def _face(rng: np.random.Generator, image: np.ndarray, side: int) -> np.ndarray:
    """A jittered square around the astronaut's face, resized to ``side``."""
    size = round(114 * rng.uniform(0.92, 1.08))
    x, y = np.round([225, 120] + rng.uniform(-6, 6, 2) - size / 2).astype(int)
    return cv2.resize(image[y : y + size, x : x + size], (side, side))


TFEID_LETTERS = "abcdef"
"""The posed labels of each TFEID performer's images: neutral to fear, no surprise."""


def _make_sources(base: Path) -> dict[str, dict[str, list[str]]]:
    """Under ``base``: ``ferplus/`` (FERPlus layout, 8 classes, contempt included: 16 train and
    8 valid gray faces, each class in turn) and ``tfeid/`` (TFEID names, 7 classes: performers
    01-02 train, 03 valid, one colour face of each of :data:`TFEID_LETTERS`); returns TFEID's
    split lists."""
    rng = np.random.default_rng(0)
    image = read_image(EXAMPLE)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    for folder, n in (("FER2013Train", 16), ("FER2013Valid", 8)):
        out = base / "ferplus" / "data" / folder
        out.mkdir(parents=True)
        rows = []
        for i in range(n):
            cv2.imwrite(str(out / f"{i}.png"), _face(rng, gray, 48))
            votes = np.zeros(10, int)
            votes[i % len(CLASSES)] = 10
            rows.append(f'{i}.png,"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
        (out / "label.csv").write_text("\n".join(rows) + "\n")
    lists: dict[str, list[str]] = {"train": [], "valid": []}
    (base / "tfeid" / "images").mkdir(parents=True)
    for performer in (1, 2, 3):
        for i, letter in enumerate(TFEID_LETTERS):
            name = f"images/{performer:02d}0{i}{letter}01.jpg"
            face = cv2.cvtColor(_face(rng, image, 64), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(base / "tfeid" / name), face)
            lists["train" if performer < 3 else "valid"].append(name)
    return {"tfeid": lists}


CONFIG = """\
name: two
cache_dir: {cache}
sources:
  - {{dataset: ferplus, root: ferplus}}
  - {{dataset: tfeid, root: tfeid, weight: 3, faces: precropped}}
model: {{dim: 8, hidden: 16, dropout: 0.0}}
train: {{epochs: 2, batch_size: 4, balanced_sampler: true, regularization: consistency}}
"""


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """The data folder of two tiny sources and a config that trains on both (TFEID's split
    lists patched in), with ``$KEYFER_DATA`` unset."""
    base = tmp_path_factory.mktemp("two_sources")
    lists = _make_sources(base / "data")
    config = base / "two.yaml"
    config.write_text(CONFIG.format(cache=base / "cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(splits, "split_list", lambda dataset, split: frozenset(lists[dataset][split]))
        patch.delenv(DATA_ENV, raising=False)
        yield base, config


def _train(config: Path, data: Path, out: Path, *args: str) -> str:
    command = ["train", str(config), "--data-root", str(data), "--out", str(out)]
    result = CliRunner().invoke(main, [*command, *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(two_sources):
    base, config = two_sources
    output = _train(config, base / "data", base / "run")
    return base / "run", output


def test_two_sources_train_with_per_domain_metrics(trained, two_sources):
    run, output = trained
    metrics = json.loads((run / "metrics.json").read_text())
    domains = metrics["domains"]
    assert list(domains) == ["ferplus", "tfeid"]
    assert domains["ferplus"]["restricted_to"] is None
    assert domains["tfeid"]["restricted_to"] == list(BASIC_CLASSES)
    assert (domains["ferplus"]["n"], domains["tfeid"]["n"], metrics["n"]) == (8, 6, 14)
    mean = (domains["ferplus"]["accuracy"] + domains["tfeid"]["accuracy"]) / 2
    assert metrics["mean_domain_accuracy"] == pytest.approx(mean)
    assert f"mean domain accuracy {mean:.4f}" in output
    calibration = metrics["calibration"]
    assert (calibration["n_fit"], calibration["n_scored"]) == (4 + 3, 4 + 3)
    assert "half A" in calibration["fit_on"] and "half B" in calibration["scored_on"]
    assert metrics["ece_after"] == calibration["ece_after"] and metrics["temperature"] > 0
    assert [epoch["epoch"] for epoch in metrics["epochs"]] == [1, 2]
    for epoch in metrics["epochs"]:
        seen = epoch["seen"]
        assert seen["ferplus"]["images"] + seen["tfeid"]["images"] == 16 + 12
        tfeid_classes = {"neutral", "happiness", "sadness", "anger", "disgust", "fear"}
        assert set(seen["tfeid"]["classes"]) == tfeid_classes  # those it has images of
        assert "contempt" in seen["ferplus"]["classes"]
        assert epoch["valid_accuracy"] == pytest.approx(sum(epoch["domains"].values()) / 2)
    log = (run / "train.log").read_text()
    assert re.search(r"epoch 2/2 loss [\d.]+ valid accuracy [\d.]+ \(mean of ferplus", log)
    assert "drew ferplus" in log and "; tfeid" in log
    caches = sorted(path.name for path in (two_sources[0] / "cache").iterdir())
    assert caches == [
        "ferplus-train-ibug68-s0.05-m0.2",
        "ferplus-valid-ibug68-s0.05-m0.2",
        "tfeid-train-precropped-ibug68-s0.05-m0.2",
        "tfeid-valid-precropped-ibug68-s0.05-m0.2",
    ]


def test_a_resumed_multi_source_run_keeps_its_history(trained, two_sources):
    base, config = two_sources
    out = base / "resumed"
    args = ["train", str(config), "--data-root", str(base / "data"), "--out", str(out)]
    with interrupted_in_second_epoch():
        assert CliRunner().invoke(main, args).exit_code != 0
    _train(config, base / "data", out, "--resume", str(out / "checkpoint.pt"))
    resumed = json.loads((out / "metrics.json").read_text())
    whole = json.loads((trained[0] / "metrics.json").read_text())
    assert [e["seen"] for e in resumed["epochs"]] == [e["seen"] for e in whole["epochs"]]
    assert [e["loss"] for e in resumed["epochs"]] == pytest.approx(
        [e["loss"] for e in whole["epochs"]]
    )


def test_faces_option_sets_every_source_s_faces_mode(two_sources):
    base, config = two_sources
    out = base / "faces"
    _train(config, base / "data", out, "--faces", "precropped", "--set", "train.epochs=1")
    experiment = load_checkpoint(out / "checkpoint.pt")[0]
    assert [source.faces for source in experiment.sources] == ["precropped", "precropped"]
    assert "building" not in (out / "train.log").read_text()  # FERPlus's own mode: same caches


def test_the_image_engine_trains_on_two_sources(two_sources):
    base, config = two_sources
    sets = ["train.engine=images", "train.epochs=1", "train.images.num_workers=0"]
    args = [arg for value in sets for arg in ("--set", value)]
    _train(config, base / "data", base / "images", *args)
    metrics = json.loads((base / "images" / "metrics.json").read_text())
    assert list(metrics["domains"]) == ["ferplus", "tfeid"] and metrics["n"] == 14
    assert metrics["epochs"][0]["seen"]["tfeid"]["images"] > 0


def test_eval_scores_each_domain_of_a_multi_source_checkpoint(trained, two_sources, monkeypatch):
    base, _ = two_sources
    monkeypatch.setenv(DATA_ENV, str(base / "data"))
    report = base / "eval.json"
    model = str(trained[0] / "checkpoint.pt")
    result = CliRunner().invoke(main, ["eval", "--model", model, "--json", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert list(data["domains"]) == ["ferplus", "tfeid"]
    assert data["domains"]["tfeid"]["restricted_to"] == list(BASIC_CLASSES)
    assert data["domains"]["tfeid"]["split"] == "valid"
    assert (data["domains"]["ferplus"]["n"], data["domains"]["tfeid"]["n"]) == (8, 6)
    accuracies = [domain["accuracy"] for domain in data["domains"].values()]
    assert data["mean_accuracy"] == pytest.approx(sum(accuracies) / 2)
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[-3:]}
    assert rows["ferplus"][:3] == ["ferplus/valid", "8", f"{accuracies[0]:.4f}"]
    assert rows["tfeid"][:3] == ["tfeid/valid", "6", f"{accuracies[1]:.4f}"]
    assert rows["mean"] == [f"{data['mean_accuracy']:.4f}"]
    assert create_model(model).info.trained_on == (("ferplus", "train"), ("tfeid", "train"))
    # A shipped model is scored on the eval splits of the datasets its record trained on.
    shipped = CliRunner().invoke(
        main, ["eval", "--model", "keyfer-ferplus-fast", "--json", str(report)]
    )
    assert shipped.exit_code == 0, shipped.output
    data = json.loads(report.read_text())
    assert list(data["domains"]) == ["ferplus"] and data["domains"]["ferplus"]["n"] == 8


def test_calibration_halves_split_each_source():
    source = torch.tensor([0] * 7 + [1] * 4 + [2])
    half_a = calibration_halves(source)
    assert [int(half_a[source == s].sum()) for s in range(3)] == [4, 2, 1]
    assert torch.equal(calibration_halves(source), half_a)
