"""Training checkpoints: :mod:`keyfer.models.checkpoint`'s files, written with the experiment that
made them and the optimizer state and epoch that resuming needs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from keyfer.data.labels import CLASSES
from keyfer.errors import KeyferError, WeightsError
from keyfer.models import checkpoint as model_checkpoint
from keyfer.models.checkpoint import model_entry, read_checkpoint
from keyfer.models.info import ModelInfo
from keyfer.nkf.head import NKFHead
from keyfer.preprocessing import DEFAULT_MARGIN, DEFAULT_PADDING
from keyfer.train.config import Experiment


def save_checkpoint(path: Path, experiment: Experiment, state: dict[str, Any]) -> None:
    """Write ``state`` (``head``, optional ``optimizer``, ``scheduler``, ``epoch``, ``metrics``,
    and ``temperature`` once fitted, else 1) with the experiment config and the model's
    description: the canonical classes and the pre-crop that training prepares faces with."""
    entries = dict(state)
    info = ModelInfo(
        name=experiment.name,
        classes=CLASSES,
        temperature=float(entries.pop("temperature", 1.0)),
        color_mode=experiment.model.color_mode,
        margin=DEFAULT_MARGIN,
        padding=DEFAULT_PADDING,
    )
    model = model_entry(experiment.model, info)
    model_checkpoint.save_checkpoint(path, model, {"config": experiment.to_dict(), **entries})


def load_checkpoint(path: str | Path) -> tuple[Experiment, dict[str, Any]]:
    """The experiment (migrated to the current config layout) and the contents of a checkpoint
    (:func:`read_checkpoint`); one without its experiment config, or with one this keyfer does
    not read, is a clear error."""
    data = read_checkpoint(path)
    if not isinstance(data.get("config"), dict):
        raise WeightsError(f"{path} is a damaged keyfer checkpoint: it has no config")
    try:
        return Experiment.from_dict(data["config"]), data
    except KeyferError as error:
        raise WeightsError(f"{path}: {error}") from error


def resume_state(path: str | Path, experiment: Experiment) -> dict[str, Any]:
    """The contents of checkpoint ``path``, to resume ``experiment`` from (its sources' data
    roots may differ). The experiment of a run begun with an older config layout is migrated first
    (:func:`~keyfer.train.config.migrate_config`). A checkpoint of another config, or of one this
    keyfer cannot read (a key unknown to it, a newer layout), is one line saying what to do."""
    try:
        saved, data = load_checkpoint(path)
    except WeightsError as error:
        if not isinstance(error.__cause__, KeyferError):
            raise
        raise KeyferError(
            f"cannot resume from {path}: its run began with a config this keyfer reads "
            f"differently ({error.__cause__}); start the run anew without --resume, or resume "
            "it with the keyfer version that began it"
        ) from error
    if len(saved.sources) == len(experiment.sources):  # the data may have moved: not the recipe
        roots = zip(saved.sources, experiment.sources, strict=True)
        saved = replace(saved, sources=[replace(mine, root=new.root) for mine, new in roots])
    if saved != experiment:
        differing = _differing_keys(saved.to_dict(), experiment.to_dict())
        raise KeyferError(
            f"{path} was trained with a different config ({', '.join(differing)} differ); "
            "resume with the same one"
        )
    return data


def _differing_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between config mappings ``a`` and ``b``."""
    differing = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            differing += _differing_keys(left, right, f"{prefix}{key}.")
        elif left != right:
            differing.append(f"{prefix}{key}")
    return differing


def init_head(head: NKFHead, path: str | Path, classifier: bool = True) -> None:
    """Start ``head`` from the head of checkpoint ``path`` (``train.init_from``).

    Without ``classifier``, the output layer (:meth:`NKFHead.output_keys`, the one tied to the
    class list) keeps its fresh initialisation and everything else is loaded: a new classifier on
    a trained body. A checkpoint whose head has another architecture is a clear error.
    """
    state = read_checkpoint(path)
    fresh = set() if classifier else head.output_keys()
    weights = {k: v for k, v in state["head"].items() if k not in fresh}
    try:
        missing, unexpected = head.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # tensor shapes differ
        raise WeightsError(
            f"the head in {path} does not fit this model config; init_from needs the same "
            f"model settings ({model_checkpoint.state_dict_mismatch(error)})"
        ) from error
    if unexpected or set(missing) != fresh:
        raise WeightsError(
            f"the head in {path} does not fit this model config (missing "
            f"{sorted(set(missing) - fresh)}, unexpected {sorted(unexpected)})"
        )
