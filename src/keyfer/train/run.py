"""``keyfer train``: an experiment from its config to a checkpoint, a log and Valid metrics.

With a frozen alignment network the head trains on Keypoint-Feature caches (built once per
dataset split, keypoint set, perturbation sigma and pre-crop margin, under ``cache_dir``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from keyfer.data.ferplus import load_ferplus
from keyfer.data.labels import CLASSES, Sample
from keyfer.data.precrop import DEFAULT_MARGIN, DEFAULT_PADDING
from keyfer.errors import KeyferError
from keyfer.evaluate import LoadedModel, dataset_logits
from keyfer.train.cache import KFCache, build_cache
from keyfer.train.cached import CachedData, CachedTrainer, head_logits
from keyfer.train.calibration import fit_temperature
from keyfer.train.checkpoint import load_checkpoint, save_checkpoint
from keyfer.train.config import Experiment
from keyfer.train.images import ImageTrainer
from keyfer.train.metrics import classification_report, expected_calibration_error

log = logging.getLogger(__name__)


def dataset_samples(experiment: Experiment, split: str) -> list[Sample]:
    """The labelled samples of a split, subsampled for ``train_subset`` (fixed seed)."""
    if experiment.dataset != "ferplus":
        raise KeyferError(f"training on {experiment.dataset!r} is not supported yet; use ferplus")
    # Soft targets are kept for every sample; majority training reads the hard labels.
    samples = load_ferplus(experiment.root, split, "probability").samples
    if split == "train" and experiment.train_subset:
        keep = np.random.default_rng(0).permutation(len(samples))[: experiment.train_subset]
        samples = [samples[i] for i in sorted(keep)]
    return samples


def cache_for(experiment: Experiment, split: str) -> KFCache:
    """The split's Keypoint-Feature cache, built on first use."""
    keypoints = experiment.model.keypoints
    cached_set = keypoints if isinstance(keypoints, str) else "ibug68"
    subset = f"-n{experiment.train_subset}" if split == "train" and experiment.train_subset else ""
    name = (
        f"{experiment.dataset}-{split}{subset}-{cached_set}"
        f"-s{experiment.train.sigma:g}-m{DEFAULT_MARGIN:g}"
    )
    root = Path(experiment.cache_dir) / name
    if (root / "meta.json").is_file():
        return KFCache.open(root)
    log.info("building the Keypoint-Feature cache %s (once)", root)
    return build_cache(
        dataset_samples(experiment, split), root, keypoints=cached_set, sigma=experiment.train.sigma
    )


def _add_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("keyfer")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the log file always gets the epochs
    return handler


class _CachedRun:
    """The cached engine behind the common run interface."""

    def __init__(self, experiment: Experiment) -> None:
        train = CachedData.load(cache_for(experiment, "train"), experiment.model)
        self.valid = CachedData.load(cache_for(experiment, "valid"), experiment.model)
        self.trainer = CachedTrainer(experiment.model, experiment.train, train)

    def valid_logits(self, mirror_tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return head_logits(self.trainer.head, self.valid, mirror_tta), self.valid.labels

    def extra_metrics(self, sigma: float) -> dict:
        """Accuracy when every Valid landmark is perturbed by N(0, (sigma IOD)^2) (the cache's
        perturbed view): the robustness that KF regularization is for."""
        logits = head_logits(self.trainer.head, self.valid, perturbed=True)
        accuracy = float((logits.argmax(1) == self.valid.labels).float().mean())
        return {"accuracy_perturbed_landmarks": {"sigma": sigma, "accuracy": accuracy}}


class _ImageRun:
    """The image engine behind the common run interface; Valid is scored from its images."""

    def __init__(self, experiment: Experiment, device: torch.device) -> None:
        self.trainer = ImageTrainer(experiment, dataset_samples(experiment, "train"), device)
        self.valid = load_ferplus(experiment.root, "valid", "majority").samples
        self.loaded = LoadedModel(
            experiment.name,
            self.trainer.model,
            list(CLASSES),
            1.0,
            experiment.model.color_mode,
            DEFAULT_MARGIN,
            DEFAULT_PADDING,
        )

    def valid_logits(self, mirror_tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        self.trainer.model.eval()
        logits, labels, _ = dataset_logits(self.loaded, self.valid, tta_flip=mirror_tta)
        return logits, labels

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
    ``metrics.json``. Returns the final metrics."""
    if experiment.model.finetune_alignment and experiment.train.engine != "images":
        raise KeyferError("fine-tuning the alignment network needs train.engine=images")
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = _add_log_file(out_dir / "train.log")
    try:
        log.info("config %s", json.dumps(experiment.to_dict()))
        if experiment.train.engine == "images":
            run = _ImageRun(experiment, device or torch.device("cpu"))
        else:
            run = _CachedRun(experiment)
        trainer = run.trainer
        start = 0
        if resume is not None:
            saved, state = load_checkpoint(resume)
            if saved != experiment:
                raise KeyferError(
                    f"{resume} was trained with a different config; resume with the same one"
                )
            trainer.load_state_dict(state)
            start = state["epoch"]
            log.info("resumed from %s after epoch %d", resume, start)
        checkpoint = out_dir / "checkpoint.pt"
        for epoch in range(start, experiment.train.epochs):
            loss = trainer.run_epoch()
            logits, labels = run.valid_logits()
            accuracy = float((logits.argmax(1) == labels).float().mean())
            log.info(
                "epoch %d/%d loss %.4f valid accuracy %.4f",
                epoch + 1,
                experiment.train.epochs,
                loss,
                accuracy,
            )
            save_checkpoint(checkpoint, experiment, {**trainer.state_dict(), "epoch": epoch + 1})
        if start >= experiment.train.epochs:  # resumed from a finished run: score it once
            logits, labels = run.valid_logits()
        metrics = classification_report(labels.numpy(), logits.argmax(1).numpy(), CLASSES)
        tta_logits, _ = run.valid_logits(mirror_tta=True)
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
        save_checkpoint(checkpoint, experiment, {**state, "temperature": torch.tensor(temperature)})
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
    finally:
        logging.getLogger("keyfer").removeHandler(handler)
