"""Checkpoints: a state dict plus the experiment config that made it (and, for resuming, the
optimizer state and epoch), stored with ``torch.save`` of plain tensors and dicts only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from keyfer.errors import WeightsError
from keyfer.nkf.head import NKFHead
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
    """Read a checkpoint written by :func:`save_checkpoint`; anything else is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or corrupt files
        raise WeightsError(f"{path} is not a keyfer checkpoint ({type(error).__name__})") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a keyfer checkpoint (no '{FORMAT}' format tag)")
    return Experiment.from_dict(data["config"]), data


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
            f"model settings ({error})"
        ) from error
    if unexpected or set(missing) != fresh:
        raise WeightsError(
            f"the head in {path} does not fit this model config (missing "
            f"{sorted(set(missing) - fresh)}, unexpected {sorted(unexpected)})"
        )
