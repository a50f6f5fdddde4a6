"""What a model carries besides its network, so that it can be used alone (after timm's
``pretrained_cfg``): its label names, calibration temperature and input preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

from keyfer.errors import KeyferError
from keyfer.nkf.config import ModelConfig


@dataclass(frozen=True)
class ModelInfo:
    """A model's description, as :func:`keyfer.create_model` gives it on ``model.info``.

    ``name``: the shipped model's name or the checkpoint's path. ``classes``: the label names in
    output order. ``temperature``: softmax(logits / temperature) are its calibrated
    probabilities. ``color_mode``: ``gray3`` (BT.601 luma in all three channels) or ``rgb``.
    ``margin`` and ``padding``: how a tight, pre-cropped face is padded before it is resized to
    the 192x192 input (:func:`keyfer.preprocessing.prepare_face`). ``digest``: a sha256 hex of
    what defines its network (keys its ONNX exports); empty for a model being trained.
    ``trained_on``: the (dataset, split) pairs it was trained on (dataset names of ``keyfer eval
    --dataset``), which ``keyfer eval`` refuses to score it on; empty when not known.
    """

    name: str
    classes: tuple[str, ...]
    temperature: float
    color_mode: str
    margin: float
    padding: str
    digest: str = ""
    trained_on: tuple[tuple[str, str], ...] = ()

    def check(self, config: ModelConfig) -> None:
        """Raise :class:`KeyferError` when this description does not fit ``config``."""
        if len(self.classes) != config.num_classes:
            raise KeyferError(
                f"model {self.name} names {len(self.classes)} classes but has "
                f"{config.num_classes} outputs"
            )
        if self.color_mode != config.color_mode:
            raise KeyferError(
                f"model {self.name} takes {self.color_mode} input but its config says "
                f"{config.color_mode}"
            )
