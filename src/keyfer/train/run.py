"""``keyfer train``: an experiment from its config to a checkpoint, a log and eval metrics.

An experiment trains on one or more sources (:mod:`keyfer.train.sources`). With a frozen
alignment network the head trains on Keypoint-Feature caches, one per source and split (named
by dataset, split, train subset and faces mode, keypoint set, perturbation sigma and pre-crop
margin, under ``cache_dir``); the image engine reads its faces from prepared-crop caches under
``cache_dir/crops``. Fine-tuning dlib's upper levels in the cached engine adds a level-3 cache
beside each Keypoint-Feature cache (:mod:`keyfer.train.upper_levels`). Every epoch scores each
source's eval split (:mod:`keyfer.train.validation`). Under torchrun every process runs the same
code (:mod:`keyfer.train.distributed`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from keyfer.data.labels import CLASSES, Sample
from keyfer.errors import KeyferError
from keyfer.faces.dlib_resnet import TAPS as APPEARANCE_TAPS
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
from keyfer.train.images import ImageTrainer, SourceCrops, crop_logits
from keyfer.train.level3_cache import Level3Cache, build_level3_cache, level3_cache_root
from keyfer.train.sampler import drawn_counts
from keyfer.train.sources import SourceData, experiment_sources, source_classes
from keyfer.train.upper_levels import (
    Level3Data,
    UpperLevelTrainer,
    check_upper_level_taps,
    facemesh_rows,
    upper_level_logits,
)
from keyfer.train.validation import ValidRows, accuracies_text

log = logging.getLogger(__name__)

CacheParts = tuple[KFCache, AppearanceCache | None]
"""A source split's Keypoint-Feature cache and, for a model with an appearance branch, its
appearance cache."""


def cache_for(
    experiment: Experiment, data: SourceData, split: str, samples: list[Sample]
) -> KFCache:
    """The Keypoint-Feature cache of split ``split`` of source ``data`` (its ``samples``), built
    on first use."""
    keypoints = experiment.model.keypoints
    cached_set = keypoints if isinstance(keypoints, str) else "ibug68"
    color_mode = experiment.model.color_mode
    # gray3 caches keep their original names, from before the colour mode was a setting.
    color = "" if color_mode == "gray3" else f"-{color_mode}"
    name = (
        f"{data.cache_stem(split)}-{cached_set}"
        f"-s{experiment.train.sigma:g}-m{DEFAULT_MARGIN:g}{color}"
    )
    root = Path(experiment.cache_dir) / name
    if (root / "meta.json").is_file():
        return KFCache.open(root)
    log.info("building the Keypoint-Feature cache %s (once)", root)
    return build_cache(
        samples, root, keypoints=cached_set, sigma=experiment.train.sigma, color_mode=color_mode
    )


def appearance_cache_for(
    experiment: Experiment, samples: list[Sample], kf_cache: KFCache
) -> AppearanceCache | None:
    """The appearance cache of ``samples`` beside their Keypoint-Feature cache when the model has
    an appearance branch (built on first use, with :data:`CACHED_TAPS` and any others asked
    for)."""
    config = experiment.model
    if config.appearance == "none":
        return None
    wanted = set(CACHED_TAPS) | set(config.appearance_taps)
    taps = [name for name in APPEARANCE_TAPS if name in wanted]
    root = appearance_cache_root(kf_cache, taps)
    if (root / "meta.json").is_file():
        return AppearanceCache.open(root)
    log.info("building the appearance cache %s (once)", root)
    return build_appearance_cache(samples, kf_cache, root, taps)


def source_caches(experiment: Experiment, data: SourceData, split: str) -> CacheParts:
    """The caches of source ``data``'s ``split`` (its train or its eval split): its
    Keypoint-Feature cache and, for a model with an appearance branch, its appearance cache,
    built on first use."""
    samples = data.train if split == data.source.split else data.valid
    kf_cache = cache_for(experiment, data, split, samples)
    return kf_cache, appearance_cache_for(experiment, samples, kf_cache)


def crops_for(
    experiment: Experiment, data: SourceData, split: str, samples: list[Sample]
) -> CropCache:
    """The prepared face crops of split ``split`` of source ``data`` (its ``samples``) for the
    image engine, built on first use."""
    return crop_cache(
        samples,
        Path(experiment.cache_dir) / "crops",
        f"{data.source.dataset}-{split}",
        experiment.model.color_mode,
        DEFAULT_MARGIN,
        DEFAULT_PADDING,
        experiment.train.images.num_workers,
    )


def level3_caches(
    experiment: Experiment, data: SourceData, split: str
) -> tuple[KFCache, Level3Cache]:
    """The Keypoint-Feature cache of source ``data``'s ``split`` and the level-3 cache beside it,
    built on first use (the level-3 cache from the split's prepared crops)."""
    samples = data.train if split == data.source.split else data.valid
    kf_cache = cache_for(experiment, data, split, samples)
    root = level3_cache_root(kf_cache)
    if (root / "meta.json").is_file():
        return kf_cache, Level3Cache.open(root)
    crops = crops_for(experiment, data, split, samples)
    log.info("building the level-3 cache %s (once)", root)
    return kf_cache, build_level3_cache(kf_cache, crops, root)


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
    """The cached engine behind the common run interface: one cache (and appearance cache) per
    source and split, their rows concatenated."""

    def __init__(
        self, experiment: Experiment, sources: list[SourceData], device: torch.device
    ) -> None:
        with builders_first():
            train = [source_caches(experiment, data, str(data.source.split)) for data in sources]
            valid = [
                source_caches(experiment, data, str(data.source.eval_split)) for data in sources
            ]
        model = experiment.model
        train_data = CachedData.load_sources(train, model)
        self.valid = CachedData.load_sources(valid, model)
        self.trainer = CachedTrainer(
            model,
            experiment.train,
            train_data,
            device,
            [data.source.weight for data in sources],
            source_classes(sources),
        )
        self.train_rows = (train_data.source_index(), train_data.labels)
        self.valid_rows = (self.valid.source_index(), self.valid.labels)

    def valid_logits(self, mirror_tta: bool = False) -> torch.Tensor:
        return head_logits(self.trainer.head, self.valid, mirror_tta)

    def perturbed_logits(self) -> torch.Tensor | None:
        """The logits when every eval landmark is perturbed by N(0, (sigma IOD)^2) (the cache's
        perturbed view): the robustness that KF regularization is for."""
        return head_logits(self.trainer.head, self.valid, perturbed=True)


class _UpperLevelRun:
    """The cached engine fine-tuning dlib's upper levels, behind the common run interface: a
    Keypoint-Feature cache and a level-3 cache per source and split, their rows concatenated."""

    def __init__(
        self, experiment: Experiment, sources: list[SourceData], device: torch.device
    ) -> None:
        check_upper_level_taps(experiment.model)
        with builders_first():
            train = [level3_caches(experiment, d, str(d.source.split)) for d in sources]
            valid = [level3_caches(experiment, d, str(d.source.eval_split)) for d in sources]
        model = experiment.model
        train_rows = facemesh_rows([kf for kf, _ in train], model)
        self.valid = facemesh_rows([kf for kf, _ in valid], model)
        self.valid_maps = Level3Data.load_sources(valid, model)
        self.trainer = UpperLevelTrainer(
            experiment,
            train_rows,
            Level3Data.load_sources(train, model),
            device,
            [data.source.weight for data in sources],
            source_classes(sources),
        )
        self.train_rows = (train_rows.source_index(), train_rows.labels)
        self.valid_rows = (self.valid.source_index(), self.valid.labels)

    def valid_logits(self, mirror_tta: bool = False) -> torch.Tensor:
        return upper_level_logits(self.trainer, self.valid, self.valid_maps, mirror_tta)

    def perturbed_logits(self) -> torch.Tensor | None:
        """The logits at the caches' perturbed landmarks (see :class:`_CachedRun`)."""
        return upper_level_logits(self.trainer, self.valid, self.valid_maps, perturbed=True)


class _ImageRun:
    """The image engine behind the common run interface: one crop cache per source and split;
    the eval splits are scored from their crops."""

    def __init__(
        self, experiment: Experiment, sources: list[SourceData], device: torch.device
    ) -> None:
        train = [crops_for(experiment, d, str(d.source.split), d.train) for d in sources]
        self.valid_crops = [
            crops_for(experiment, d, str(d.source.eval_split), d.valid) for d in sources
        ]
        self.valid_rows_of = [np.flatnonzero(crops.readable) for crops in self.valid_crops]
        labels = [
            [d.valid[i].label for i in rows]
            for d, rows in zip(sources, self.valid_rows_of, strict=True)
        ]
        samples = [sample for data in sources for sample in data.train]
        source = np.repeat(np.arange(len(sources)), [len(data.train) for data in sources])
        crops = train[0] if len(train) == 1 else SourceCrops(train)
        self.trainer = ImageTrainer(
            experiment, samples, crops, device, source, source_classes(sources)
        )
        self.trainer.model.info = ModelInfo(
            name=experiment.name,
            classes=CLASSES,
            temperature=1.0,
            color_mode=experiment.model.color_mode,
            margin=DEFAULT_MARGIN,
            padding=DEFAULT_PADDING,
        )
        kept = np.flatnonzero(crops.readable)
        self.train_rows = (
            torch.from_numpy(source[kept]),
            torch.tensor([samples[i].label for i in kept], dtype=torch.long),
        )
        sizes = torch.tensor([len(rows) for rows in self.valid_rows_of])
        self.valid_rows = (
            torch.repeat_interleave(torch.arange(len(sources)), sizes),
            torch.tensor([label for part in labels for label in part], dtype=torch.long),
        )

    def valid_logits(self, mirror_tta: bool = False) -> torch.Tensor:
        self.trainer.model.eval()
        return torch.cat(
            [
                crop_logits(self.trainer.model, crops, rows, mirror_tta)
                for crops, rows in zip(self.valid_crops, self.valid_rows_of, strict=True)
            ]
        )

    def perturbed_logits(self) -> torch.Tensor | None:
        return None


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    """An epoch's log line: its loss and eval accuracy (with several sources, their mean and
    each one's), and the images drawn from each source."""
    line = (
        f"epoch {record['epoch']}/{epochs} loss {record['loss']:.6f} "
        f"valid accuracy {record['valid_accuracy']:.4f}"
    )
    if len(record["domains"]) > 1:
        line += f" (mean of {accuracies_text(record['domains'])})"
    drawn = "; ".join(
        f"{name} {seen['images']} ("
        + ", ".join(f"{c} {n}" for c, n in seen["classes"].items())
        + ")"
        for name, seen in record["seen"].items()
    )
    return f"{line}; drew {drawn}"


def train_experiment(
    experiment: Experiment,
    out_dir: Path,
    resume: Path | None = None,
    device: torch.device | None = None,
) -> dict:
    """Train, score every source's eval split every epoch, fit the temperature, and write
    ``out_dir``: ``checkpoint.pt`` (config, weights, optimizer, epoch, temperature), ``train.log``,
    ``metrics.json``. Returns the final metrics (:meth:`ValidRows.report`, plus ``epochs``: each
    epoch's ``loss``, ``valid_accuracy`` (the mean over the sources), each source's accuracy in
    ``domains`` and the images it drew from each source and class in ``seen``).

    Under torchrun every process calls this: each trains on its shard of every global batch, the
    losses and eval logits are gathered, so all return the same metrics, and rank 0 alone writes
    ``out_dir``. A CUDA ``device`` becomes each process's ``cuda:LOCAL_RANK``."""
    if experiment.model.finetune_alignment and experiment.train.engine != "images":
        raise KeyferError("fine-tuning the alignment network needs train.engine=images")
    out_dir.mkdir(parents=True, exist_ok=True)
    with process_group(device or torch.device("cpu")) as device, _run_log(out_dir / "train.log"):
        log.info("config %s", json.dumps(experiment.to_dict()))
        sources = experiment_sources(experiment)
        run: _CachedRun | _UpperLevelRun | _ImageRun
        if experiment.train.engine == "images":
            run = _ImageRun(experiment, sources, device)
        elif experiment.model.finetune_appearance:
            run = _UpperLevelRun(experiment, sources, device)
        else:
            run = _CachedRun(experiment, sources, device)
        trainer = run.trainer
        names = [data.name for data in sources]
        for what, (source, _) in (("training", run.train_rows), ("eval", run.valid_rows)):
            counts = torch.bincount(source, minlength=len(names)).tolist()
            empty = [name for name, count in zip(names, counts, strict=True) if not count]
            if empty:
                raise KeyferError(f"the source {empty[0]} has no {what} image with a face")
        # Each source's eval split is scored on its own classes (as keyfer eval does).
        valid = ValidRows.of(sources, run.valid_rows[1], run.valid_rows[0])
        start, history = 0, []
        if resume is not None:
            state = resume_state(resume, experiment)
            trainer.load_state_dict(state)
            start, history = state["epoch"], list(state.get("history", []))
            log.info("resumed from %s after epoch %d", resume, start)
        checkpoint = out_dir / "checkpoint.pt"
        for epoch in range(start, experiment.train.epochs):
            loss = trainer.run_epoch()
            logits = run.valid_logits()
            domains = valid.domain_accuracies(logits)
            record = {
                "epoch": epoch + 1,
                "loss": loss,
                "valid_accuracy": float(np.mean(list(domains.values()))),
                "domains": domains,
                "seen": drawn_counts(trainer.sampler.drawn, *run.train_rows, names),
            }
            history.append(record)
            log.info("%s", _epoch_line(record, experiment.train.epochs))
            state = {**trainer.state_dict(), "epoch": epoch + 1, "history": history}
            _save(checkpoint, experiment, state)
        if start >= experiment.train.epochs:  # resumed from a finished run: score it once
            logits = run.valid_logits()
        perturbed = run.perturbed_logits()
        metrics = valid.report(
            logits,
            run.valid_logits(mirror_tta=True),
            None if perturbed is None else (experiment.train.sigma, perturbed),
        )
        metrics["epochs"] = history
        temperature = metrics["temperature"]
        state = {
            **trainer.state_dict(),
            "epoch": experiment.train.epochs,
            "history": history,
            "metrics": metrics,
        }
        _save(checkpoint, experiment, {**state, "temperature": torch.tensor(temperature)})
        if is_main_process():
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        for name, domain in metrics["domains"].items():
            log.info(
                "%s: valid accuracy %.4f, mean class accuracy %.4f, macro-F1 %.4f (n=%d)",
                name,
                domain["accuracy"],
                domain["mean_class_accuracy"],
                domain["macro_f1"],
                domain["n"],
            )
        log.info(
            "valid accuracy %.4f, mean class accuracy %.4f, macro-F1 %.4f, mean domain accuracy "
            "%.4f; %s: ECE %.4f -> %.4f",
            metrics["accuracy"],
            metrics["mean_class_accuracy"],
            metrics["macro_f1"],
            metrics["mean_domain_accuracy"],
            metrics["calibration"]["scored_on"],
            metrics["ece_before"],
            metrics["ece_after"],
        )
        return metrics
