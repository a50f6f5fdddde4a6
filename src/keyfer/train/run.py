"""``keyfer train``: an experiment from its config to a checkpoint, a log and Valid metrics.

With a frozen alignment network the head trains on Keypoint-Feature caches (built once per
dataset split, keypoint set, perturbation sigma and pre-crop margin, under ``cache_dir``); the
image engine reads its faces from prepared-crop caches under ``cache_dir/crops``. Under torchrun
every process runs the same code (:mod:`keyfer.train.distributed`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from keyfer.data.datasets import load_split, training_splits
from keyfer.data.labels import CLASSES, Sample
from keyfer.errors import KeyferError
from keyfer.evaluate import class_mask
from keyfer.faces.dlib_resnet import TAPS as APPEARANCE_TAPS
from keyfer.metrics.calibration import fit_temperature
from keyfer.metrics.classification import classification_report, expected_calibration_error
from keyfer.models.info import ModelInfo
from keyfer.preprocessing import DEFAULT_MARGIN, DEFAULT_PADDING
from keyfer.train.appearance_cache import (
    CACHED_TAPS,
    AppearanceCache,
    appearance_cache_root,
    build_appearance_cache,
)
from keyfer.train.cache import KFCache, build_cache
from keyfer.train.cached import CachedData, CachedTrainer, head_logits
from keyfer.train.checkpoint import resume_state, save_checkpoint
from keyfer.train.config import Experiment
from keyfer.train.crops import CropCache, crop_cache
from keyfer.train.distributed import barrier, builders_first, is_main_process, process_group
from keyfer.train.images import ImageTrainer, crop_logits

log = logging.getLogger(__name__)


def dataset_samples(experiment: Experiment, split: str) -> list[Sample]:
    """The labelled samples of a split of the experiment's dataset, the train split subsampled
    for ``train_subset`` (fixed seed)."""
    # Soft targets are kept where the dataset has votes; majority training reads the hard labels.
    samples = load_split(experiment.dataset, experiment.root, split, "probability").samples
    if split == training_splits(experiment.dataset)[0] and experiment.train_subset:
        keep = np.random.default_rng(0).permutation(len(samples))[: experiment.train_subset]
        samples = [samples[i] for i in sorted(keep)]
    return samples


def cache_for(experiment: Experiment, split: str) -> KFCache:
    """The split's Keypoint-Feature cache, built on first use."""
    keypoints = experiment.model.keypoints
    cached_set = keypoints if isinstance(keypoints, str) else "ibug68"
    train_split = training_splits(experiment.dataset)[0]
    subset = (
        f"-n{experiment.train_subset}" if split == train_split and experiment.train_subset else ""
    )
    color_mode = experiment.model.color_mode
    # gray3 caches keep their original names, from before the colour mode was a setting.
    color = "" if color_mode == "gray3" else f"-{color_mode}"
    name = (
        f"{experiment.dataset}-{split}{subset}-{cached_set}"
        f"-s{experiment.train.sigma:g}-m{DEFAULT_MARGIN:g}{color}"
    )
    root = Path(experiment.cache_dir) / name
    if (root / "meta.json").is_file():
        return KFCache.open(root)
    log.info("building the Keypoint-Feature cache %s (once)", root)
    return build_cache(
        dataset_samples(experiment, split),
        root,
        keypoints=cached_set,
        sigma=experiment.train.sigma,
        color_mode=color_mode,
    )


def appearance_cache_for(
    experiment: Experiment, split: str, kf_cache: KFCache
) -> AppearanceCache | None:
    """The split's appearance cache beside its Keypoint-Feature cache when the model has an
    appearance branch (built on first use, with :data:`CACHED_TAPS` and any others asked for)."""
    config = experiment.model
    if config.appearance == "none":
        return None
    wanted = set(CACHED_TAPS) | set(config.appearance_taps)
    taps = [name for name in APPEARANCE_TAPS if name in wanted]
    root = appearance_cache_root(kf_cache, taps)
    if (root / "meta.json").is_file():
        return AppearanceCache.open(root)
    log.info("building the appearance cache %s (once)", root)
    return build_appearance_cache(dataset_samples(experiment, split), kf_cache, root, taps)


def crops_for(experiment: Experiment, split: str, samples: list[Sample]) -> CropCache:
    """The prepared face crops of a split's ``samples`` for the image engine, built on first use."""
    return crop_cache(
        samples,
        Path(experiment.cache_dir) / "crops",
        f"{experiment.dataset}-{split}",
        experiment.model.color_mode,
        DEFAULT_MARGIN,
        DEFAULT_PADDING,
        experiment.train.num_workers,
    )


@contextmanager
def _run_log(path: Path) -> Iterator[None]:
    """The run's log file, written by rank 0; the other processes log warnings only."""
    logger = logging.getLogger("keyfer")
    level = logger.level
    handler = None
    if is_main_process():
        handler = logging.FileHandler(path)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)  # the log file always gets the epochs
    else:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()


def _save(path: Path, experiment: Experiment, state: dict) -> None:
    """Rank 0 writes the checkpoint; the other processes wait until it is written."""
    if is_main_process():
        save_checkpoint(path, experiment, state)
    barrier()


class _CachedRun:
    """The cached engine behind the common run interface."""

    def __init__(self, experiment: Experiment, device: torch.device) -> None:
        train_split, eval_split = training_splits(experiment.dataset)
        with builders_first():
            train_cache, valid_cache = (cache_for(experiment, s) for s in (train_split, eval_split))
            train_appearance, valid_appearance = (
                appearance_cache_for(experiment, split, cache)
                for split, cache in ((train_split, train_cache), (eval_split, valid_cache))
            )
        train = CachedData.load(train_cache, experiment.model, train_appearance)
        self.valid = CachedData.load(valid_cache, experiment.model, valid_appearance)
        self.trainer = CachedTrainer(experiment.model, experiment.train, train, device)

    def valid_logits(self, mirror_tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return head_logits(self.trainer.head, self.valid, mirror_tta), self.valid.labels

    def extra_metrics(self, sigma: float) -> dict:
        """Accuracy when every Valid landmark is perturbed by N(0, (sigma IOD)^2) (the cache's
        perturbed view): the robustness that KF regularization is for."""
        logits = head_logits(self.trainer.head, self.valid, perturbed=True)
        accuracy = float((logits.argmax(1) == self.valid.labels).float().mean())
        return {"accuracy_perturbed_landmarks": {"sigma": sigma, "accuracy": accuracy}}


class _ImageRun:
    """The image engine behind the common run interface; Valid is scored from its crops."""

    def __init__(self, experiment: Experiment, device: torch.device) -> None:
        train_split, eval_split = training_splits(experiment.dataset)
        samples = dataset_samples(experiment, train_split)
        valid = load_split(experiment.dataset, experiment.root, eval_split).samples
        train_crops = crops_for(experiment, train_split, samples)
        self.valid_crops = crops_for(experiment, eval_split, valid)
        self.valid_rows = np.flatnonzero(self.valid_crops.readable)
        self.valid_labels = torch.tensor([valid[i].label for i in self.valid_rows])
        self.trainer = ImageTrainer(experiment, samples, train_crops, device)
        self.trainer.model.info = ModelInfo(
            name=experiment.name,
            classes=CLASSES,
            temperature=1.0,
            color_mode=experiment.model.color_mode,
            margin=DEFAULT_MARGIN,
            padding=DEFAULT_PADDING,
        )

    def valid_logits(self, mirror_tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        self.trainer.model.eval()
        logits = crop_logits(self.trainer.model, self.valid_crops, self.valid_rows, mirror_tta)
        return logits, self.valid_labels

    def extra_metrics(self, sigma: float) -> dict:
        return {}


def train_experiment(
    experiment: Experiment,
    out_dir: Path,
    resume: Path | None = None,
    device: torch.device | None = None,
) -> dict:
    """Train, evaluate on Valid every epoch, fit the temperature, and write ``out_dir``:
    ``checkpoint.pt`` (config, weights, optimizer, epoch, temperature), ``train.log``,
    ``metrics.json``. Returns the final metrics.

    Under torchrun every process calls this: each trains on its shard of every global batch, the
    losses and Valid logits are gathered, so all return the same metrics, and rank 0 alone writes
    ``out_dir``. A CUDA ``device`` becomes each process's ``cuda:LOCAL_RANK``."""
    if experiment.model.finetune_appearance and experiment.train.engine != "images":
        raise KeyferError("fine-tuning the appearance branch needs train.engine=images")
    if experiment.model.finetune_alignment and experiment.train.engine != "images":
        raise KeyferError("fine-tuning the alignment network needs train.engine=images")
    out_dir.mkdir(parents=True, exist_ok=True)
    with process_group(device or torch.device("cpu")) as device, _run_log(out_dir / "train.log"):
        log.info("config %s", json.dumps(experiment.to_dict()))
        if experiment.train.engine == "images":
            run = _ImageRun(experiment, device)
        else:
            run = _CachedRun(experiment, device)
        trainer = run.trainer
        # A dataset with fewer classes than the model scores only its own (as keyfer eval does).
        eval_split = training_splits(experiment.dataset)[1]
        dataset_classes = load_split(experiment.dataset, experiment.root, eval_split).classes
        mask, restricted = class_mask(CLASSES, dataset_classes)
        start = 0
        if resume is not None:
            state = resume_state(resume, experiment)
            trainer.load_state_dict(state)
            start = state["epoch"]
            log.info("resumed from %s after epoch %d", resume, start)
        checkpoint = out_dir / "checkpoint.pt"
        for epoch in range(start, experiment.train.epochs):
            loss = trainer.run_epoch()
            logits, labels = run.valid_logits()
            accuracy = float(((logits + mask).argmax(1) == labels).float().mean())
            log.info(
                "epoch %d/%d loss %.6f valid accuracy %.4f",
                epoch + 1,
                experiment.train.epochs,
                loss,
                accuracy,
            )
            _save(checkpoint, experiment, {**trainer.state_dict(), "epoch": epoch + 1})
        if start >= experiment.train.epochs:  # resumed from a finished run: score it once
            logits, labels = run.valid_logits()
        # Scores restricted to the dataset's classes; calibration on all the model's outputs,
        # as keyfer predict reports them.
        predictions = (logits + mask).argmax(1)
        metrics = classification_report(labels.numpy(), predictions.numpy(), CLASSES)
        metrics["restricted_to"] = restricted
        tta_logits = run.valid_logits(mirror_tta=True)[0] + mask
        metrics["accuracy_mirror_tta"] = float((tta_logits.argmax(1) == labels).float().mean())
        metrics.update(run.extra_metrics(experiment.train.sigma))
        temperature = fit_temperature(logits, labels)
        probabilities = F.softmax(logits, 1).numpy()
        metrics["temperature"] = temperature
        metrics["ece_before"] = expected_calibration_error(probabilities, labels.numpy())
        metrics["ece_after"] = expected_calibration_error(
            F.softmax(logits / temperature, 1).numpy(), labels.numpy()
        )
        state = {**trainer.state_dict(), "epoch": experiment.train.epochs, "metrics": metrics}
        _save(checkpoint, experiment, {**state, "temperature": torch.tensor(temperature)})
        if is_main_process():
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        log.info(
            "valid accuracy %.4f, mean class accuracy %.4f, macro-F1 %.4f, ECE %.4f -> %.4f",
            metrics["accuracy"],
            metrics["mean_class_accuracy"],
            metrics["macro_f1"],
            metrics["ece_before"],
            metrics["ece_after"],
        )
        return metrics
