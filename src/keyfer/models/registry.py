"""The model registry: ``create_model(name_or_checkpoint)`` and ``list_models()`` (after timm's
factory).

Each shipped model is a ``<name>.json`` record beside its ``<name>.safetensors`` head weights in
this folder. The record states the weights' sha256, the label names in canonical order, the
preprocessing (input colour mode and crop), the training data (described, and as the
``trained_on`` dataset splits), the licence, the metrics, the calibration temperature and the
full model config. A model whose networks were fine-tuned ships their weights too, one file per
network (``fine_tuned``: ``{"appearance": {"weights": "<name>.appearance.safetensors", "sha256":
...}}``); the others use the pretrained networks of :mod:`keyfer.faces.weights`. Loading never
guesses: a record whose weights are missing or do not match their sha256 is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load

from keyfer.errors import KeyferError, WeightsError
from keyfer.models.checkpoint import checkpoint_model
from keyfer.models.info import ModelInfo
from keyfer.nkf.config import ModelConfig
from keyfer.nkf.model import NKFModel

log = logging.getLogger(__name__)
MODELS_DIR = Path(__file__).parent
DEFAULT_MODEL = "keyfer-multidomain"
"""The model the API and the CLI use unless told otherwise."""


@dataclass(frozen=True)
class ModelRecord:
    """Everything needed to load and describe one shipped model."""

    name: str
    weights: str
    sha256: str
    classes: list[str]
    preprocessing: dict[str, Any]
    config: dict[str, Any]
    temperature: float
    training_data: str
    license: str
    metrics: dict[str, Any]
    description: str = ""
    trained_on: list[list[str]] = field(default_factory=list)
    """[dataset, split] pairs (``keyfer eval`` names) of the training data."""
    fine_tuned: dict[str, dict[str, str]] = field(default_factory=dict)
    """The fine-tuned networks' own weights: {part: {"weights": file, "sha256": hex}}, the part
    ``appearance`` (dlib's ResNet) or ``facemesh``."""

    @property
    def trained_datasets(self) -> list[str]:
        """The datasets of :attr:`trained_on`, each once, in order."""
        return list(dict.fromkeys(dataset for dataset, _ in self.trained_on))

    @property
    def weights_path(self) -> Path:
        return MODELS_DIR / self.weights

    @property
    def digest(self) -> str:
        """A sha256 hex of what defines the model's network: its weights' sha256s and config."""
        defining: list[Any] = [self.sha256, self.config]
        if self.fine_tuned:  # a head-only model keeps the digest it had before fine_tuned existed
            defining.append({part: entry["sha256"] for part, entry in self.fine_tuned.items()})
        return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()


@cache
def _records() -> dict[str, ModelRecord]:
    records = {}
    known = {f.name for f in fields(ModelRecord)}
    for path in sorted(MODELS_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        records[data["name"]] = ModelRecord(**{k: v for k, v in data.items() if k in known})
    return records


def list_models() -> list[str]:
    """Names of the shipped models."""
    return sorted(_records())


def get_record(name: str) -> ModelRecord:
    """The record of a shipped model; an unknown name is a clear error listing the known ones."""
    try:
        return _records()[name]
    except KeyError:
        raise KeyferError(
            f"unknown model {name!r}; shipped models: {', '.join(list_models())}"
        ) from None


def _checked_weights(record: ModelRecord, file: str, sha256: str) -> dict:
    """The state dict in ``file`` (beside the record) in fp32, after checking its sha256."""
    path = MODELS_DIR / file
    if not path.is_file():
        raise WeightsError(f"weights {file} of model {record.name} are missing; reinstall keyfer")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise WeightsError(f"{path} does not match the sha256 in its record")
    return {k: v.float() for k, v in load(data).items()}


def load_head_weights(record: ModelRecord) -> dict:
    """The record's head state dict, after checking the file's sha256."""
    return _checked_weights(record, record.weights, record.sha256)


def load_fine_tuned_weights(model: NKFModel, record: ModelRecord) -> None:
    """Load the record's fine-tuned networks (``fine_tuned``) into ``model``, each file checked
    against its sha256."""
    for part, entry in record.fine_tuned.items():
        module = getattr(model, part, None)
        if not isinstance(module, torch.nn.Module):
            raise WeightsError(f"model {record.name} ships {part} weights its config has no {part}")
        module.load_state_dict(_checked_weights(record, entry["weights"], entry["sha256"]))


def _shipped_model(name: str, pretrained: bool, overrides: dict[str, Any]) -> NKFModel:
    """A shipped model described by its record (its digest is :attr:`ModelRecord.digest`)."""
    record = get_record(name)
    config = ModelConfig(**{**record.config, **overrides})
    model = NKFModel(config)
    pre = record.preprocessing
    model.info = ModelInfo(
        name=record.name,
        classes=tuple(record.classes),
        temperature=record.temperature,
        color_mode=pre["color_mode"],
        margin=pre["precrop_margin"],
        padding=pre["precrop_padding"],
        digest=record.digest,
        trained_on=tuple((dataset, split) for dataset, split in record.trained_on),
    )
    if pretrained:
        try:
            model.head.load_state_dict(load_head_weights(record))
            load_fine_tuned_weights(model, record)
        except RuntimeError as error:
            raise WeightsError(
                f"the weights of {name} do not fit the overridden architecture; "
                "use pretrained=False to change it"
            ) from error
    return model


def create_model(
    name_or_checkpoint: str | os.PathLike[str], pretrained: bool = True, **overrides: Any
) -> NKFModel:
    """The one loader of expression models: a shipped model by name (``list_models()``) or a
    ``keyfer train`` checkpoint by path, with its weights when ``pretrained``. The model
    describes itself in ``model.info`` (:class:`ModelInfo`: classes, temperature, colour mode,
    pre-crop margin and padding, digest, the dataset splits it was trained on). It is on the CPU
    in training mode, as built.

    ``overrides`` replace model-config fields (e.g. ``dropout=0.1``, or ``finetune_alignment=True``
    to train it further); architecture changes need ``pretrained=False``. A shipped model's name
    wins over a file or folder of that name (with a warning; ``./NAME`` loads the file).
    """
    source = os.fspath(name_or_checkpoint)
    path = Path(source)
    if source in list_models():
        if path.exists():
            log.warning(
                "%s is the shipped model; give ./%s to load the file or folder of that name",
                source,
                source,
            )
        return _shipped_model(source, pretrained, overrides)
    if path.suffix == ".pt" or path.exists():
        return checkpoint_model(path, pretrained, **overrides)
    raise KeyferError(
        f"unknown model {source!r}: not a checkpoint file nor a shipped model "
        f"({', '.join(list_models()) or 'none shipped'})"
    )
