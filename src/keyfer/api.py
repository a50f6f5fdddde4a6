"""``ExpressionRecognizer``: photos in, faces with landmarks and expressions out."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from keyfer.device import resolve_device
from keyfer.evaluate import load_model
from keyfer.faces.pipeline import FacePipeline, Faces
from keyfer.io.images import read_image, to_rgb_array
from keyfer.io.records import face_records

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray


@dataclass(frozen=True)
class Face:
    """One face: ``record`` holds the JSON face record (box, score, presence, keypoints6,
    landmarks68, mesh in image pixels, pixel centres at +0.5), ``label`` and ``probabilities``
    (canonical class -> calibrated probability), ``keypoint_importance`` (K floats, RKFA)."""

    record: dict[str, Any]
    label: str
    probabilities: dict[str, float]
    keypoint_importance: list[float] | None

    def to_record(self) -> dict[str, Any]:
        """The JSON face record of ``keyfer predict``."""
        return {
            **self.record,
            "expression": {"label": self.label, "probabilities": self.probabilities},
            "keypoint_importance": self.keypoint_importance,
        }


class ExpressionRecognizer:
    """Detect faces, align them, and recognise their expressions.

    ``model`` is a shipped model name (``keyfer models``) or a checkpoint path; ``device`` is
    auto, cpu, cuda or cuda:N; ``tiling`` searches tiles for small faces (off for speed);
    ``tta_flip`` averages each face with its mirror image; ``threads`` sets torch's CPU threads.
    """

    def __init__(
        self,
        model: str = "keyfer-ferplus",
        device: str = "auto",
        detector_threshold: float = 0.5,
        tiling: bool = True,
        tta_flip: bool = False,
        threads: int | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.loaded = load_model(model, self.device)
        self.pipeline = FacePipeline(self.device, tiling, detector_threshold)
        self.tta_flip = tta_flip

    @property
    def classes(self) -> list[str]:
        return self.loaded.classes

    def analyze(self, image: np.ndarray) -> tuple[Faces, list[Face]]:
        """The pipeline's :class:`Faces` and one :class:`Face` each for an (H, W, 3) RGB image."""
        faces = self.pipeline(image)
        if len(faces) == 0:
            return faces, []
        probabilities, importance = self._expressions(faces.crops)
        results = []
        for record, p, weights in zip(face_records(faces), probabilities, importance, strict=True):
            named = {c: round(float(v), 4) for c, v in zip(self.classes, p, strict=True)}
            label = self.classes[int(p.argmax())]
            results.append(Face(record, label, named, weights))
        return faces, results

    @torch.inference_mode()
    def _expressions(self, crops: torch.Tensor) -> tuple[np.ndarray, list]:
        crops = crops.to(self.device)
        if self.loaded.color_mode == "gray3":
            crops = (crops * _LUMA.to(crops)).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        model = self.loaded.model
        out = model(crops)
        logits = out.logits
        if self.tta_flip:
            logits = (logits + model(crops.flip(-1)).logits) / 2
        probabilities = torch.softmax(logits.float() / self.loaded.temperature, 1).cpu().numpy()
        if out.importance is None:
            return probabilities, [None] * len(crops)
        importance = [[round(float(w), 4) for w in row] for row in out.importance.float().cpu()]
        return probabilities, importance

    def predict(self, image: ImageInput) -> list[Face]:
        """Faces of one image: a path, a PIL image, or an (H, W[, C]) numpy array (RGB)."""
        if isinstance(image, (str, os.PathLike)):
            array = read_image(image)
        else:
            array = to_rgb_array(image)
        return self.analyze(array)[1]

    def predict_batch(
        self, images: Sequence[ImageInput] | Iterable[ImageInput]
    ) -> list[list[Face]]:
        """:meth:`predict` for each image, in order."""
        return [self.predict(image) for image in images]
