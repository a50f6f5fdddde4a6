"""``keyfer eval``: a model (shipped name or checkpoint) scored on a dataset split from images.

The JSON report holds at least ``accuracy`` (a fraction), ``mean_class_accuracy``, ``macro_f1``,
``n`` (images scored), ``classes`` and ``confusion`` (rows true, columns predicted); METHOD §4.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from keyfer.data.ferplus import load_ferplus
from keyfer.data.folder import load_folder
from keyfer.data.labels import CLASSES, Sample
from keyfer.data.precrop import DEFAULT_MARGIN, DEFAULT_PADDING, prepare_face
from keyfer.errors import KeyferError
from keyfer.io.images import read_image
from keyfer.models.registry import create_model, get_record, list_models
from keyfer.nkf.model import NKFModel
from keyfer.train.checkpoint import load_checkpoint
from keyfer.train.metrics import classification_report

log = logging.getLogger(__name__)
DATASETS = ("ferplus", "folder")


@dataclass
class LoadedModel:
    """A model ready for inference with what its preprocessing needs."""

    name: str
    model: NKFModel
    classes: list[str]
    temperature: float
    color_mode: str
    margin: float
    padding: str
    digest: str = ""


def load_model(name_or_path: str, device: torch.device) -> LoadedModel:
    """A shipped model by name, or a ``keyfer train`` checkpoint by path."""
    path = Path(name_or_path)
    if path.suffix == ".pt" or path.exists():
        experiment, state = load_checkpoint(path)
        model = NKFModel(experiment.model)
        model.head.load_state_dict(state["head"])
        if "facemesh" in state:  # fine-tuned alignment network
            model.facemesh.load_state_dict(state["facemesh"])
        temperature = float(state.get("temperature", 1.0))
        loaded = LoadedModel(
            str(path),
            model,
            list(CLASSES),
            temperature,
            experiment.model.color_mode,
            DEFAULT_MARGIN,
            DEFAULT_PADDING,
        )
    elif name_or_path in list_models():
        record = get_record(name_or_path)
        pre = record.preprocessing
        loaded = LoadedModel(
            record.name,
            create_model(record.name),
            record.classes,
            record.temperature,
            pre["color_mode"],
            pre["precrop_margin"],
            pre["precrop_padding"],
        )
    else:
        raise KeyferError(
            f"unknown model {name_or_path!r}: not a checkpoint file nor a shipped model "
            f"({', '.join(list_models()) or 'none shipped'})"
        )
    loaded.model.to(device).eval()
    return loaded


def load_dataset(dataset: str, root: Path, split: str | None) -> tuple[list[Sample], list[str]]:
    """Samples of ``dataset`` (``ferplus`` or ``folder``) under ``root`` (METHOD §4 names), and
    the dataset's own classes: all eight for FERPlus, the class folders for ``folder``."""
    if dataset == "ferplus":
        if split not in ("train", "valid", "test"):
            raise KeyferError("--split for ferplus must be train, valid or test")
        return load_ferplus(root, split, "majority").samples, list(CLASSES)
    if dataset == "folder":
        if split not in (None, "all"):
            raise KeyferError("the folder dataset has no splits; omit --split or use all")
        samples = load_folder(root)
        return samples, [CLASSES[i] for i in sorted({s.label for s in samples})]
    raise KeyferError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")


@torch.inference_mode()
def predict_logits(loaded: LoadedModel, crops: np.ndarray, tta_flip: bool) -> torch.Tensor:
    """(B, 192, 192, 3) uint8 crops -> (B, n_classes) temperature-scaled logits."""
    device = next(loaded.model.parameters()).device
    batch = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float() / 255.0
    logits = loaded.model(batch).logits
    if tta_flip:
        logits = (logits + loaded.model(batch.flip(-1)).logits) / 2
    return logits.float().cpu() / loaded.temperature


def dataset_logits(
    loaded: LoadedModel, samples: list[Sample], tta_flip: bool = False, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(N, n_classes) temperature-scaled logits and (N,) labels of the readable samples, and the
    error messages of the unreadable ones."""
    logits, labels, unreadable = [], [], []
    for start in tqdm(range(0, len(samples), batch_size), desc="eval", unit="batch", disable=None):
        crops, batch_labels = [], []
        for sample in samples[start : start + batch_size]:
            try:
                image = read_image(sample.path)
                crops.append(prepare_face(image, loaded.color_mode, loaded.margin, loaded.padding))
                batch_labels.append(sample.label)
            except KeyferError as error:
                unreadable.append(str(error))
        if crops:
            logits.append(predict_logits(loaded, np.stack(crops), tta_flip))
            labels.extend(batch_labels)
    if not labels:
        raise KeyferError("no image of the dataset could be read")
    return torch.cat(logits), torch.tensor(labels), unreadable


def evaluate(
    loaded: LoadedModel,
    samples: list[Sample],
    dataset_classes: list[str] = CLASSES,
    tta_flip: bool = False,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Score ``loaded`` on ``samples``; unreadable images are counted, not scored. When the
    dataset's classes are fewer than the model's, predictions are restricted to them (by the
    canonical names), and the report says so in ``restricted_to``."""
    present = [loaded.classes.index(c) for c in dataset_classes if c in loaded.classes]
    restricted = list(dataset_classes) if len(present) < len(loaded.classes) else None
    logits, labels, unreadable = dataset_logits(loaded, samples, tta_flip, batch_size)
    if restricted:
        log.info(
            "the dataset has %d of the model's %d classes; predictions are restricted to %s",
            len(present),
            len(loaded.classes),
            ", ".join(restricted),
        )
        mask = torch.full((len(loaded.classes),), float("-inf"))
        mask[present] = 0.0
        logits = logits + mask
    report = classification_report(labels.numpy(), logits.argmax(1).numpy(), loaded.classes)
    report.update(
        model=loaded.name,
        tta="flip" if tta_flip else None,
        restricted_to=restricted,
        unreadable=len(unreadable),
    )
    return report
