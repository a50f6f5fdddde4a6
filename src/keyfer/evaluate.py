"""``keyfer eval``: a model (shipped name or checkpoint) scored on a dataset split from images.

The JSON report holds at least ``accuracy`` (a fraction), ``mean_class_accuracy``, ``macro_f1``,
``n`` (images scored), ``classes`` and ``confusion`` (rows true, columns predicted); METHOD §4.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from keyfer.data.datasets import load_split
from keyfer.data.labels import CLASSES, Sample
from keyfer.data.precrop import DEFAULT_MARGIN, DEFAULT_PADDING, prepare_face
from keyfer.data.samples import load_sample_image
from keyfer.data.split import DatasetSplit
from keyfer.errors import KeyferError
from keyfer.models.registry import create_model, get_record, list_models
from keyfer.nkf.model import NKFModel
from keyfer.robustness import RobustnessSpec, robustness_logits, robustness_report
from keyfer.train.checkpoint import load_checkpoint, load_model_weights
from keyfer.train.metrics import classification_report

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready for inference with what its preprocessing needs; ``digest`` is a sha256 hex
    of what defines its network (keys its exports), empty for a model being trained."""

    name: str
    model: NKFModel
    classes: list[str]
    temperature: float
    color_mode: str
    margin: float
    padding: str
    digest: str = ""


def _checkpoint_model(path: Path) -> LoadedModel:
    """A ``keyfer train`` checkpoint's model; its digest is the file's sha256."""
    experiment, state = load_checkpoint(path)
    model = NKFModel(experiment.model)
    load_model_weights(model, state, path)
    return LoadedModel(
        str(path),
        model,
        list(CLASSES),
        float(state.get("temperature", 1.0)),
        experiment.model.color_mode,
        DEFAULT_MARGIN,
        DEFAULT_PADDING,
        hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def _shipped_model(name: str) -> LoadedModel:
    """A shipped model; its digest is :attr:`ModelRecord.digest`."""
    record = get_record(name)
    pre = record.preprocessing
    return LoadedModel(
        record.name,
        create_model(record.name),
        record.classes,
        record.temperature,
        pre["color_mode"],
        pre["precrop_margin"],
        pre["precrop_padding"],
        record.digest,
    )


def load_model(name_or_path: str, device: torch.device) -> LoadedModel:
    """A shipped model by name, or a ``keyfer train`` checkpoint by path. A shipped model's name
    wins over a file or folder of that name (with a warning; ``./NAME`` loads the file)."""
    path = Path(name_or_path)
    if name_or_path in list_models():
        if path.exists():
            log.warning(
                "%s is the shipped model; give ./%s to load the file or folder of that name",
                name_or_path,
                name_or_path,
            )
        loaded = _shipped_model(name_or_path)
    elif path.suffix == ".pt" or path.exists():
        loaded = _checkpoint_model(path)
    else:
        raise KeyferError(
            f"unknown model {name_or_path!r}: not a checkpoint file nor a shipped model "
            f"({', '.join(list_models()) or 'none shipped'})"
        )
    loaded.model.to(device).eval()
    return loaded


def load_dataset(dataset: str, root: Path, split: str | None) -> DatasetSplit:
    """Split ``split`` of ``dataset`` under ``root`` (METHOD §4 names) with majority labels:
    its samples, its own classes (the restriction of a model's predictions) and the rows left
    out (:func:`keyfer.data.datasets.load_split`)."""
    return load_split(dataset, root, split, "majority")


def _crop_tensor(loaded: LoadedModel, crops: np.ndarray) -> torch.Tensor:
    """(B, 192, 192, 3) uint8 crops -> (B, 3, 192, 192) floats in [0, 1] on the model's device."""
    device = next(loaded.model.parameters()).device
    return torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float() / 255.0


@torch.inference_mode()
def predict_logits(loaded: LoadedModel, crops: np.ndarray, tta_flip: bool) -> torch.Tensor:
    """(B, 192, 192, 3) uint8 crops -> (B, n_classes) temperature-scaled logits."""
    batch = _crop_tensor(loaded, crops)
    logits = loaded.model(batch).logits
    if tta_flip:
        logits = (logits + loaded.model(batch.flip(-1)).logits) / 2
    return logits.float().cpu() / loaded.temperature


BatchLogits = Callable[[np.ndarray, list[int]], list[torch.Tensor]]
"""(B, 192, 192, 3) uint8 crops and their positions in the sample list -> (B, n_classes) logits."""


def _dataset_pass(
    loaded: LoadedModel, samples: list[Sample], batch_size: int, batch_logits: BatchLogits
) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
    """``batch_logits`` of the readable samples, each output concatenated to (N, n_classes), their
    (N,) labels, and the error messages of the unreadable samples."""
    outputs, labels, unreadable = [], [], []
    for start in tqdm(range(0, len(samples), batch_size), desc="eval", unit="batch", disable=None):
        crops, batch_labels, indices = [], [], []
        for index, sample in enumerate(samples[start : start + batch_size], start):
            try:
                image = load_sample_image(sample)
                crops.append(prepare_face(image, loaded.color_mode, loaded.margin, loaded.padding))
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
    loaded: LoadedModel, samples: list[Sample], tta_flip: bool = False, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(N, n_classes) temperature-scaled logits and (N,) labels of the readable samples, and the
    error messages of the unreadable ones."""
    (logits,), labels, unreadable = _dataset_pass(
        loaded, samples, batch_size, lambda crops, _: [predict_logits(loaded, crops, tta_flip)]
    )
    return logits, labels, unreadable


def robustness_dataset_logits(
    loaded: LoadedModel,
    samples: list[Sample],
    spec: RobustnessSpec,
    tta_flip: bool = False,
    batch_size: int = 64,
) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
    """Like :func:`dataset_logits`, with one (N, n_classes) temperature-scaled logits tensor per
    setting in :func:`keyfer.robustness.robustness_logits` order (the clean crops first)."""

    def batch_logits(crops: np.ndarray, indices: list[int]) -> list[torch.Tensor]:
        batch = _crop_tensor(loaded, crops)
        logits = robustness_logits(loaded.model, batch, indices, spec, tta_flip)
        return [values.float().cpu() / loaded.temperature for values in logits]

    return _dataset_pass(loaded, samples, batch_size, batch_logits)


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
    loaded: LoadedModel,
    samples: list[Sample],
    dataset_classes: list[str] = CLASSES,
    tta_flip: bool = False,
    batch_size: int = 64,
    robustness: RobustnessSpec | None = None,
) -> dict[str, Any]:
    """Score ``loaded`` on ``samples``; unreadable images are counted, not scored. When the
    dataset's classes are fewer than the model's, predictions are restricted to them (by the
    canonical names), and the report says so in ``restricted_to``. With ``robustness``, the same
    pass also scores its landmark-noise and occlusion settings (:mod:`keyfer.robustness`), with
    the same restriction and mirror TTA, into ``landmark_noise`` and ``occlusion``."""
    mask, restricted = class_mask(loaded.classes, dataset_classes)
    if robustness is None:
        clean, labels, unreadable = dataset_logits(loaded, samples, tta_flip, batch_size)
        variants = [clean]
    else:
        variants, labels, unreadable = robustness_dataset_logits(
            loaded, samples, robustness, tta_flip, batch_size
        )
    variants = [values + mask for values in variants]
    report = classification_report(labels.numpy(), variants[0].argmax(1).numpy(), loaded.classes)
    report.update(
        model=loaded.name,
        tta="flip" if tta_flip else None,
        restricted_to=restricted,
        unreadable=len(unreadable),
    )
    if robustness is not None:
        report.update(robustness_report(variants, labels.numpy(), loaded.classes, robustness))
    return report
