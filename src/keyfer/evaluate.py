"""``keyfer eval``: a model (:func:`keyfer.create_model`'s, shipped or a checkpoint) scored on a
dataset split from images, pre-cropped faces prepared as the model's ``info`` says.

The JSON report holds at least ``accuracy`` (a fraction), ``mean_class_accuracy``, ``macro_f1``,
``n`` (images scored), ``classes`` and ``confusion`` (rows true, columns predicted); see
docs/method.md, 'Evaluation'.
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
from keyfer.data.datasets import load_split
from keyfer.data.labels import CLASSES, Sample
from keyfer.data.samples import load_sample_image
from keyfer.data.split import DatasetSplit
from keyfer.errors import KeyferError
from keyfer.metrics.classification import classification_report
from keyfer.nkf.model import NKFModel
from keyfer.preprocessing import prepare_face
from keyfer.robustness import RobustnessSpec, robustness_logits, robustness_report

log = logging.getLogger(__name__)


def load_dataset(dataset: str, root: Path, split: str | None) -> DatasetSplit:
    """Split ``split`` of ``dataset`` under ``root`` (docs/method.md, 'Datasets and splits')
    with majority labels: its samples, its own classes (the restriction of a model's
    predictions) and the rows left out (:func:`keyfer.data.datasets.load_split`)."""
    return load_split(dataset, root, split, "majority")


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
) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
    """``batch_logits`` of the readable samples, each output concatenated to (N, n_classes), their
    (N,) labels, and the error messages of the unreadable samples."""
    info = model.info
    outputs, labels, unreadable = [], [], []
    for start in tqdm(range(0, len(samples), batch_size), desc="eval", unit="batch", disable=None):
        crops, batch_labels, indices = [], [], []
        for index, sample in enumerate(samples[start : start + batch_size], start):
            try:
                image = load_sample_image(sample)
                crops.append(prepare_face(image, info.color_mode, info.margin, info.padding))
                batch_labels.append(sample.label)
                indices.append(index)
            except KeyferError as error:
                unreadable.append(str(error))
        if crops:
            outputs.append(batch_logits(np.stack(crops), indices))
            labels.extend(batch_labels)
    if not labels:
        raise KeyferError("no image of the dataset could be read")
    return (
        [torch.cat(parts) for parts in zip(*outputs, strict=True)],
        torch.tensor(labels),
        unreadable,
    )


def dataset_logits(
    model: NKFModel, samples: list[Sample], tta_flip: bool = False, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(N, n_classes) temperature-scaled logits and (N,) labels of the readable samples, and the
    error messages of the unreadable ones."""
    (logits,), labels, unreadable = _dataset_pass(
        model, samples, batch_size, lambda crops, _: [predict_logits(model, crops, tta_flip)]
    )
    return logits, labels, unreadable


def robustness_dataset_logits(
    model: NKFModel,
    samples: list[Sample],
    spec: RobustnessSpec,
    tta_flip: bool = False,
    batch_size: int = 64,
) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
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
    """Score ``model`` (:func:`keyfer.create_model`'s) on ``samples``; unreadable images are
    counted, not scored. When the dataset's classes are fewer than the model's, predictions are
    restricted to them (by the canonical names), and the report says so in ``restricted_to``.
    With ``robustness``, the same pass also scores its landmark-noise and occlusion settings
    (:mod:`keyfer.robustness`), with the same restriction and mirror TTA, into
    ``landmark_noise`` and ``occlusion``."""
    classes = list(model.info.classes)
    mask, restricted = class_mask(classes, dataset_classes)
    if robustness is None:
        clean, labels, unreadable = dataset_logits(model, samples, tta_flip, batch_size)
        variants = [clean]
    else:
        variants, labels, unreadable = robustness_dataset_logits(
            model, samples, robustness, tta_flip, batch_size
        )
    variants = [values + mask for values in variants]
    report = classification_report(labels.numpy(), variants[0].argmax(1).numpy(), classes)
    report.update(
        model=model.info.name,
        tta="flip" if tta_flip else None,
        restricted_to=restricted,
        unreadable=len(unreadable),
    )
    if robustness is not None:
        report.update(robustness_report(variants, labels.numpy(), classes, robustness))
    return report
