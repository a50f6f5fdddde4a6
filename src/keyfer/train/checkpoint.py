"""Checkpoints: a state dict plus the experiment config that made it (and, for resuming, the
optimizer state and epoch), stored with ``torch.save`` of plain tensors and dicts only."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

from keyfer.errors import KeyferError, WeightsError
from keyfer.nkf.head import NKFHead
from keyfer.nkf.model import NKFModel
from keyfer.train.config import Experiment

FORMAT = "keyfer-checkpoint-1"


def save_checkpoint(path: Path, experiment: Experiment, state: dict[str, Any]) -> None:
    """Write ``state`` (``head``, optional ``optimizer``, ``scheduler``, ``epoch``, ``metrics``)
    with the experiment config, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": FORMAT, "config": experiment.to_dict(), **state}, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> tuple[Experiment, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; anything else (another file, a
    truncated one, one without its config or head) is a clear error naming the file."""
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
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a keyfer checkpoint (no '{FORMAT}' format tag)")
    missing = [key for key in ("config", "head") if not isinstance(data.get(key), dict)]
    if missing:
        raise WeightsError(
            f"{path} is a damaged keyfer checkpoint: it has no {' or '.join(missing)}"
        )
    try:
        return Experiment.from_dict(data["config"]), data
    except KeyferError as error:
        raise WeightsError(f"{path}: {error}") from error


def _mismatch(error: RuntimeError) -> str:
    """One line from :meth:`torch.nn.Module.load_state_dict`'s error: the keys and shapes that
    differ (shortened)."""
    details = str(error).partition(":")[2] or str(error)
    return textwrap.shorten(details, 300, placeholder=" ...")


def load_model_weights(model: NKFModel, state: dict[str, Any], path: str | Path) -> None:
    """Load checkpoint ``path``'s ``head`` and, where it has them, its fine-tuned ``facemesh``
    and ``appearance`` weights into ``model`` (built from its config); weights that do not fit
    are a clear error."""
    for part in ("head", "facemesh", "appearance"):
        if part not in state:
            continue
        module = getattr(model, part)
        if module is None:
            raise WeightsError(f"{path} has {part} weights, but its model config has no {part}")
        try:
            module.load_state_dict(state[part])
        except (RuntimeError, TypeError, AttributeError) as error:  # shapes, keys, or no dict
            raise WeightsError(
                f"the {part} weights in {path} do not fit its model config: {_mismatch(error)}"
            ) from error


def init_head(head: NKFHead, path: str | Path, classifier: bool = True) -> None:
    """Start ``head`` from the head of checkpoint ``path`` (``train.init_from``).

    Without ``classifier``, the output layer (:meth:`NKFHead.output_keys`, the one tied to the
    class list) keeps its fresh initialisation and everything else is loaded: a new classifier on
    a trained body. A checkpoint whose head has another architecture is a clear error.
    """
    _, state = load_checkpoint(path)
    fresh = set() if classifier else head.output_keys()
    weights = {k: v for k, v in state["head"].items() if k not in fresh}
    try:
        missing, unexpected = head.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # tensor shapes differ
        raise WeightsError(
            f"the head in {path} does not fit this model config; init_from needs the same "
            f"model settings ({_mismatch(error)})"
        ) from error
    if unexpected or set(missing) != fresh:
        raise WeightsError(
            f"the head in {path} does not fit this model config (missing "
            f"{sorted(set(missing) - fresh)}, unexpected {sorted(unexpected)})"
        )
