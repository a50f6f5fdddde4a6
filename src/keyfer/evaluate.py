"""``keyfer eval``: a model (:func:`keyfer.create_model`'s, shipped or a checkpoint) scored on a
dataset split from images, each face found by its sample's faces mode and prepared as the model's
``info`` says (:func:`keyfer.data.crops.sample_crop`, the crops training sees).

The JSON report holds at least ``accuracy`` (a fraction), ``mean_class_accuracy``, ``macro_f1``,
``n`` (images scored), ``classes`` and ``confusion`` (rows true, columns predicted), and
``left_out`` (images not scored, by reason: ``unreadable``, ``no_face``); see docs/method.md,
'Evaluation'. A model is never scored on a split it was trained on
(:func:`check_not_trained_on`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from keyfer.crop_predictor import CropPredictor
from keyfer.data.crops import (
    NO_FACE,
    UNREADABLE,
    LeftOut,
    SampleLeftOut,
    left_out_counts,
    left_out_text,
    sample_crop,
)
from keyfer.data.datasets import dataset_spec, load_split
from keyfer.data.labels import CLASSES, Sample
from keyfer.data.split import DatasetSplit
from keyfer.errors import KeyferError
from keyfer.metrics.classification import classification_report
from keyfer.models.info import ModelInfo
from keyfer.nkf.model import NKFModel
from keyfer.robustness import RobustnessSpec, robustness_logits, robustness_report

log = logging.getLogger(__name__)


def load_dataset(
    dataset: str, root: Path, split: str | None, faces: str | None = None
) -> DatasetSplit:
    """Split ``split`` of ``dataset`` under ``root`` (docs/method.md, 'Datasets and splits')
    with majority labels: its samples, its own classes (the restriction of a model's
    predictions) and the rows left out (:func:`keyfer.data.datasets.load_split`). ``faces``
    sets every sample's faces mode (None: the dataset's own)."""
    return load_split(dataset, root, split, "majority", faces)


def check_not_trained_on(info: ModelInfo, dataset: str, split: str) -> None:
    """Raise :class:`KeyferError` when the model ``info`` describes was trained on split
    ``split`` of ``dataset`` (:attr:`ModelInfo.trained_on`), or ``split`` is ``all`` of a dataset
    it was trained on: a score there measures what it learnt, not how it does on new faces.
    ``folder`` datasets are not checked: their name does not say which images they hold."""
    if dataset == "folder":
        return
    seen = [part for name, part in info.trained_on if name == dataset and split in (part, "all")]
    if seen:
        other = dataset_spec(dataset).eval_split
        hint = f"; score it on another split (e.g. --split {other})" if other else ""
        raise KeyferError(
            f"{info.name} was trained on {dataset} {seen[0]}: it is not scored on "
            f"{dataset}/{split}{hint}"
        )


def _crop_tensor(model: NKFModel, crops: np.ndarray) -> torch.Tensor:
    """(B, 192, 192, 3) uint8 crops -> (B, 3, 192, 192) floats in [0, 1] on the model's device."""
    device = next(model.parameters()).device
    return torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float() / 255.0


def predict_logits(model: NKFModel, crops: np.ndarray, tta_flip: bool) -> torch.Tensor:
    """(B, 192, 192, 3) uint8 crops in the model's colour mode -> (B, n_classes) logits divided
    by the model's temperature, in one network call (:class:`CropPredictor`)."""
    predictor = CropPredictor.for_model(model, tta_flip, batch_size=max(len(crops), 1))
    return predictor(_crop_tensor(model, crops)).logits


BatchLogits = Callable[[np.ndarray, list[int]], list[torch.Tensor]]
"""(B, 192, 192, 3) uint8 crops and their positions in the sample list -> (B, n_classes) logits."""


def _dataset_pass(
    model: NKFModel, samples: list[Sample], batch_size: int, batch_logits: BatchLogits
) -> tuple[list[torch.Tensor], torch.Tensor, list[LeftOut]]:
    """``batch_logits`` of the samples that give a crop (:func:`sample_crop`), each output
    concatenated to (N, n_classes), their (N,) labels, and the samples left out. None scored is
    a :class:`KeyferError` naming the most common reason."""
    info = model.info
    outputs, labels, left_out = [], [], []
    for start in tqdm(range(0, len(samples), batch_size), desc="eval", unit="batch", disable=None):
        crops, batch_labels, indices = [], [], []
        for index, sample in enumerate(samples[start : start + batch_size], start):
            try:
                crops.append(sample_crop(sample, info.color_mode, info.margin, info.padding))
            except SampleLeftOut as error:
                left_out.append(LeftOut.of(sample, error))
                continue
            batch_labels.append(sample.label)
            indices.append(index)
        if crops:
            outputs.append(batch_logits(np.stack(crops), indices))
            labels.extend(batch_labels)
    if not labels:
        raise _nothing_scored(left_out)
    return (
        [torch.cat(parts) for parts in zip(*outputs, strict=True)],
        torch.tensor(labels),
        left_out,
    )


def _nothing_scored(left_out: list[LeftOut]) -> KeyferError:
    """The error of a pass that scored no image: the most common reason, with an example."""
    if not left_out:
        return KeyferError("no image of the dataset could be scored: it holds none")
    counts = left_out_counts(left_out)
    reason = max(counts, key=lambda name: counts[name])
    example = next(left for left in left_out if left.reason == reason)
    detail = example.path if reason == NO_FACE else example.message
    others = left_out_text({name: n for name, n in counts.items() if name != reason})
    return KeyferError(
        f"no image of the dataset could be scored: {left_out_text({reason: counts[reason]})} "
        f"(e.g. {detail})" + (f"; also {others}" if others else "")
    )


def dataset_logits(
    model: NKFModel, samples: list[Sample], tta_flip: bool = False, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor, list[LeftOut]]:
    """(N, n_classes) temperature-scaled logits and (N,) labels of the samples that give a crop,
    and the samples left out (with their reasons)."""
    (logits,), labels, left_out = _dataset_pass(
        model, samples, batch_size, lambda crops, _: [predict_logits(model, crops, tta_flip)]
    )
    return logits, labels, left_out


def robustness_dataset_logits(
    model: NKFModel,
    samples: list[Sample],
    spec: RobustnessSpec,
    tta_flip: bool = False,
    batch_size: int = 64,
) -> tuple[list[torch.Tensor], torch.Tensor, list[LeftOut]]:
    """Like :func:`dataset_logits`, with one (N, n_classes) temperature-scaled logits tensor per
    setting in :func:`keyfer.robustness.robustness_logits` order (the clean crops first)."""

    def batch_logits(crops: np.ndarray, indices: list[int]) -> list[torch.Tensor]:
        batch = _crop_tensor(model, crops)
        logits = robustness_logits(model, batch, indices, spec, tta_flip)
        return [values.float().cpu() / model.info.temperature for values in logits]

    return _dataset_pass(model, samples, batch_size, batch_logits)


def class_mask(
    model_classes: Sequence[str], dataset_classes: Sequence[str]
) -> tuple[torch.Tensor, list[str] | None]:
    """A (n_model_classes,) additive logit mask, -inf on the model's classes that the dataset
    lacks (matched by canonical name), and the dataset's classes when that restricts anything
    (logged), else None."""
    present = [model_classes.index(c) for c in dataset_classes if c in model_classes]
    mask = torch.full((len(model_classes),), float("-inf"))
    mask[present] = 0.0
    if len(present) == len(model_classes):
        return mask, None
    restricted = [c for c in dataset_classes if c in model_classes]
    log.info(
        "the dataset has %d of the model's %d classes; predictions are restricted to %s",
        len(present),
        len(model_classes),
        ", ".join(restricted),
    )
    return mask, restricted


def evaluate(
    model: NKFModel,
    samples: list[Sample],
    dataset_classes: Sequence[str] = CLASSES,
    tta_flip: bool = False,
    batch_size: int = 64,
    robustness: RobustnessSpec | None = None,
) -> dict[str, Any]:
    """Score ``model`` (:func:`keyfer.create_model`'s) on ``samples``. Of the ``images``
    samples, those without a crop (unreadable, or no face found) are not scored but counted by
    reason in ``left_out`` (and the unreadable ones in ``unreadable`` too, as before). When the
    dataset's classes are fewer than the model's, predictions are restricted to them (by the
    canonical names), and the report says so in ``restricted_to``.
    With ``robustness``, the same pass also scores its landmark-noise and occlusion settings
    (:mod:`keyfer.robustness`), with the same restriction and mirror TTA, into
    ``landmark_noise`` and ``occlusion``."""
    classes = list(model.info.classes)
    mask, restricted = class_mask(classes, dataset_classes)
    if robustness is None:
        clean, labels, left_out = dataset_logits(model, samples, tta_flip, batch_size)
        variants = [clean]
    else:
        variants, labels, left_out = robustness_dataset_logits(
            model, samples, robustness, tta_flip, batch_size
        )
    variants = [values + mask for values in variants]
    report = classification_report(labels.numpy(), variants[0].argmax(1).numpy(), classes)
    counts = left_out_counts(left_out)
    report.update(
        model=model.info.name,
        tta="flip" if tta_flip else None,
        restricted_to=restricted,
        images=len(samples),
        left_out=counts,
        unreadable=counts[UNREADABLE],
    )
    if robustness is not None:
        report.update(robustness_report(variants, labels.numpy(), classes, robustness))
    return report


def domains_report(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The report of a model scored on several domains (``keyfer eval`` of a checkpoint's
    training sources): each one's :func:`evaluate` report by name under ``domains``, and
    ``mean_accuracy``, the mean of their accuracies (each domain counts once, whatever its
    size)."""
    accuracies = [report["accuracy"] for report in reports.values()]
    return {"domains": reports, "mean_accuracy": float(np.mean(accuracies))}
