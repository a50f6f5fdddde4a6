"""Checkpoint files (``keyfer train``'s ``checkpoint.pt``): a model's weights with the description
that makes them usable alone, plus what resuming its run needs. Written with ``torch.save`` of
plain tensors, numbers, strings, lists and dicts only, and read with ``weights_only=True``.

Format version 2, tagged ``keyfer-checkpoint-2``:

- ``model``: ``config`` (the :class:`~keyfer.nkf.config.ModelConfig` fields) and ``classes``,
  ``temperature``, ``color_mode``, ``margin``, ``padding`` (:class:`ModelInfo`'s fields);
- ``head``, and where they were fine-tuned ``facemesh`` and ``appearance``: state dicts;
- the training run's entries (``config``: its experiment, whose key layout is its
  ``config_version``, older ones migrated by :func:`keyfer.train.config.migrate_config`;
  ``optimizer``, ``scheduler``, ``generator``, ``sampler``, ``epoch``, ``metrics``), which
  :mod:`keyfer.train.checkpoint` reads; loading a model reads only the experiment's training data
  (:func:`checkpoint_trained_on`).

Version 1 (keyfer 0.2.0 and before) had no ``model`` entry: its model config was the
experiment's ``model`` section and its temperature a top-level tensor, and every such model was
trained on the 8 canonical classes with pre-crop margin 0.2 and edge padding. Reading it writes
those in (:func:`read_checkpoint`), so that a later change of the defaults leaves it as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import textwrap
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from keyfer.errors import KeyferError, WeightsError
from keyfer.models.info import ModelInfo
from keyfer.nkf.config import ModelConfig
from keyfer.nkf.model import NKFModel

FORMAT_VERSION = 2
FINE_TUNABLE_PARTS = ("facemesh", "appearance")
"""The networks a checkpoint carries (beside its ``head``) where its run fine-tuned them."""
_TAG = re.compile(r"keyfer-checkpoint-(\d+)")

# What every version-1 checkpoint was trained with (keyfer 0.2.0's classes and pre-crop).
_VERSION_1_CLASSES = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)  # fmt: skip
_VERSION_1_MARGIN = 0.2
_VERSION_1_PADDING = "edge"
_VERSION_1_COLOR_MODE = "gray3"  # the default of the model configs of that release

TRAIN_SPLIT = "train"
"""The split an experiment trained on when it names none: the train split of every dataset
``keyfer train`` has trained on (:func:`keyfer.data.datasets.training_splits`; a test keeps the
two in step)."""


def model_entry(config: ModelConfig, info: ModelInfo) -> dict[str, Any]:
    """The ``model`` entry of a checkpoint of a model with ``config`` described by ``info``."""
    info.check(config)
    return {
        "config": asdict(config),
        "classes": list(info.classes),
        "temperature": float(info.temperature),
        "color_mode": info.color_mode,
        "margin": float(info.margin),
        "padding": info.padding,
    }


def save_checkpoint(path: Path, model: dict[str, Any], state: dict[str, Any]) -> None:
    """Write ``state`` (weights and training entries) with the ``model`` entry (see
    :func:`model_entry`) and the format tag, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": f"keyfer-checkpoint-{FORMAT_VERSION}", **state, "model": model}, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The contents of a checkpoint in the current format (an older one migrated). Anything else
    (another file, a truncated one, a newer format, one without its model entry or head) is one
    :class:`WeightsError` line naming the file."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a folder, not a keyfer checkpoint")
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or corrupt files
        raise WeightsError(
            f"{path} is not a keyfer checkpoint, or it is truncated ({type(error).__name__})"
        ) from error
    tag = _TAG.fullmatch(str(data.get("format"))) if isinstance(data, dict) else None
    if tag is None:
        raise WeightsError(f"{path} is not a keyfer checkpoint (no keyfer-checkpoint format tag)")
    version = int(tag.group(1))
    if not 1 <= version <= FORMAT_VERSION:
        raise WeightsError(
            f"{path} is a keyfer checkpoint of format version {version}; this keyfer reads "
            f"versions 1 to {FORMAT_VERSION}: upgrade keyfer to load it"
        )
    if version == 1:
        data = _from_version_1(data)
    missing = [key for key in ("model", "head") if not isinstance(data.get(key), dict)]
    if missing:
        raise WeightsError(
            f"{path} is a damaged keyfer checkpoint: it has no {' or '.join(missing)}"
        )
    return data


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 checkpoint's contents in version 2 (see the module docstring); one without
    its experiment config gets no ``model`` entry (reported as damaged)."""
    experiment = data.get("config")
    config = experiment.get("model") if isinstance(experiment, dict) else None
    if not isinstance(config, dict):
        return data
    temperature = data.get("temperature")
    model = {
        "config": config,
        "classes": list(_VERSION_1_CLASSES),
        "temperature": 1.0 if temperature is None else float(temperature),
        "color_mode": config.get("color_mode", _VERSION_1_COLOR_MODE),
        "margin": _VERSION_1_MARGIN,
        "padding": _VERSION_1_PADDING,
    }
    rest = {k: v for k, v in data.items() if k != "temperature"}
    return {**rest, "format": f"keyfer-checkpoint-{FORMAT_VERSION}", "model": model}


def checkpoint_trained_on(data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The (dataset, split) pairs a checkpoint's experiment (``data["config"]``) trained on: each
    of its ``sources`` (their ``dataset``, and ``split`` or :data:`TRAIN_SPLIT`), else its
    ``dataset``'s :data:`TRAIN_SPLIT`; empty without an experiment."""
    experiment = data.get("config")
    if not isinstance(experiment, dict):
        return ()
    sources = experiment.get("sources")
    if not isinstance(sources, list):
        sources = [experiment]
    return tuple(
        (str(source["dataset"]), str(source.get("split", TRAIN_SPLIT)))
        for source in sources
        if isinstance(source, dict) and "dataset" in source
    )


def state_dict_mismatch(error: Exception) -> str:
    """One line from :meth:`torch.nn.Module.load_state_dict`'s error: the keys and shapes that
    differ (shortened)."""
    details = str(error).partition(":")[2] or str(error)
    return textwrap.shorten(details, 300, placeholder=" ...")


def load_model_weights(
    model: NKFModel, state: dict[str, Any], path: str | os.PathLike[str]
) -> None:
    """Load checkpoint ``path``'s ``head`` and, where it has them, its fine-tuned ``facemesh``
    and ``appearance`` weights into ``model`` (built from its config); weights that do not fit
    are a clear error."""
    for part in ("head", *FINE_TUNABLE_PARTS):
        if part not in state:
            continue
        module = getattr(model, part)
        if module is None:
            raise WeightsError(f"{path} has {part} weights, but its model config has no {part}")
        try:
            module.load_state_dict(state[part])
        except (RuntimeError, TypeError, AttributeError) as error:  # shapes, keys, or no dict
            mismatch = state_dict_mismatch(error)
            raise WeightsError(
                f"the {part} weights in {path} do not fit its model config: {mismatch}"
            ) from error


def checkpoint_model(
    path: str | os.PathLike[str], pretrained: bool = True, **overrides: Any
) -> NKFModel:
    """The model of checkpoint ``path``, described by its ``model`` entry (its name is the path
    as given, its digest the file's sha256, its training data its experiment's:
    :func:`checkpoint_trained_on`), with its weights when ``pretrained``. ``overrides`` replace
    model-config fields; architecture changes need ``pretrained=False``."""
    data = read_checkpoint(path)
    entry = data["model"]
    try:
        config = ModelConfig(**{**entry["config"], **overrides})
        info = ModelInfo(
            name=str(path),
            classes=tuple(entry["classes"]),
            temperature=float(entry["temperature"]),
            color_mode=entry["color_mode"],
            margin=float(entry["margin"]),
            padding=entry["padding"],
            digest=hashlib.sha256(Path(path).read_bytes()).hexdigest(),
            trained_on=checkpoint_trained_on(data),
        )
        model = NKFModel(config)
        model.info = info
    except (KeyError, TypeError, ValueError, KeyferError) as error:
        raise WeightsError(f"{path} has a model entry this keyfer cannot read: {error}") from error
    if pretrained:
        load_model_weights(model, data, path)
    return model
