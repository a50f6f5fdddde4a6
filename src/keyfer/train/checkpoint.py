"""Checkpoints: a state dict plus the experiment config that made it (and, for resuming, the
optimizer state and epoch), stored with ``torch.save`` of plain tensors and dicts only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from keyfer.errors import WeightsError
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
