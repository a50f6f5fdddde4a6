"""One crop predictor for the Python API, ``keyfer eval`` and training's validation: a crop
network run on chunks of crops, with mirror TTA, its logits divided by the model's temperature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from keyfer.nkf.model import NKFModel

CropNetwork = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
"""Model-ready (B, 3, 192, 192) crops -> (B, C) logits and (B, K) keypoint importances (or None):
the model itself (:func:`model_network`) or its ONNX export
(:meth:`keyfer.export.OnnxCropNetwork.crop_outputs`)."""


class CropOutputs(NamedTuple):
    """``logits`` (B, C) divided by the temperature and ``importance`` (B, K) or None, float32 on
    the CPU."""

    logits: torch.Tensor
    importance: torch.Tensor | None


def model_network(model: NKFModel) -> CropNetwork:
    """``model`` as a :data:`CropNetwork` (its logits and keypoint importances)."""

    def run(crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = model(crops)
        return out.logits, out.importance

    return run


@dataclass(frozen=True)
class CropPredictor:
    """Runs ``network`` on up to ``batch_size`` crops at a time, each chunk first through
    ``prepare`` (e.g. to the device and the model's colour mode). With ``tta_flip`` the logits
    are the mean of the crop's and its mirror image's; the importances are the crop's alone.
    Temperature scaling happens on the CPU, so a model's scaled logits do not depend on the device
    it ran on beyond its raw logits."""

    network: CropNetwork
    temperature: float
    num_classes: int
    tta_flip: bool = False
    batch_size: int = 32
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def for_model(
        cls, model: NKFModel, tta_flip: bool = False, batch_size: int = 32
    ) -> CropPredictor:
        """The torch predictor of a model that describes itself (``model.info``)."""
        info = model.info
        return cls(model_network(model), info.temperature, len(info.classes), tta_flip, batch_size)

    @torch.inference_mode()
    def __call__(self, crops: torch.Tensor) -> CropOutputs:
        """:class:`CropOutputs` of (B, 3, 192, 192) crops (model-ready, unless ``prepare`` makes
        them so)."""
        if len(crops) == 0:
            return CropOutputs(torch.zeros(0, self.num_classes), None)
        outputs = [self._chunk(chunk) for chunk in crops.split(self.batch_size)]
        logits = torch.cat([chunk.logits for chunk in outputs])
        parts = [chunk.importance for chunk in outputs if chunk.importance is not None]
        return CropOutputs(logits, torch.cat(parts) if parts else None)

    def _chunk(self, crops: torch.Tensor) -> CropOutputs:
        if self.prepare is not None:
            crops = self.prepare(crops)
        logits, importance = self.network(crops)
        if self.tta_flip:
            logits = (logits + self.network(crops.flip(-1))[0]) / 2
        return CropOutputs(
            logits.float().cpu() / self.temperature,
            None if importance is None else importance.float().cpu(),
        )
