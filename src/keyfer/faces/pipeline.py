"""Image -> faces: detection, alignment, FaceMesh, and the mesh mapped back to the image."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from keyfer.faces import align
from keyfer.faces.detector import FaceDetector
from keyfer.faces.facemesh import FaceMesh
from keyfer.faces.ibug68 import ibug68

DEFAULT_MIN_PRESENCE = 0.5


@dataclass(frozen=True)
class Faces:
    """The N faces of one image, in original image pixels (pixel centres at integer + 0.5).

    ``boxes`` (N, 4) x0, y0, x1, y1; ``scores`` (N,) detector scores; ``keypoints6`` (N, 6, 2);
    ``presence`` (N,) FaceMesh face presence; ``mesh`` (N, 468, 3) with z in the x pixel scale;
    ``landmarks68`` (N, 68, 2); ``crop_to_image`` (N, 2, 3) each face's alignment;
    ``crops`` (N, 3, 192, 192) the aligned RGB crops in [0, 1]; ``taps`` {stride: (N, C, h, w)}.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    keypoints6: torch.Tensor
    presence: torch.Tensor
    mesh: torch.Tensor
    landmarks68: torch.Tensor
    crop_to_image: torch.Tensor
    crops: torch.Tensor
    taps: dict[int, torch.Tensor]

    def __len__(self) -> int:
        return len(self.scores)


class FacePipeline:
    """Detector + alignment + FaceMesh, frozen, for images of any size.

    Faces whose FaceMesh presence is below ``min_presence`` are dropped as false detections.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        tiling: bool = True,
        detector_threshold: float = 0.5,
        min_presence: float = DEFAULT_MIN_PRESENCE,
        refine: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.detector = FaceDetector(detector_threshold, tiling=tiling, device=self.device)
        self.facemesh = FaceMesh.from_pretrained().to(self.device)
        self.min_presence = min_presence
        self.refine = refine

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, taps: Iterable[int] = ()) -> Faces:
        """Find the faces of an (H, W, 3) uint8 RGB image and their landmarks."""
        detections = self.detector(image)
        crop_to_image = align.crop_to_image_from_detections(detections.boxes, detections.keypoints)
        for _ in range(self.refine):
            crops = align.extract_crops(image, crop_to_image)
            out = self.facemesh(crops.to(self.device))
            mesh = align.mesh_to_image(crop_to_image, out.mesh.float().cpu())
            crop_to_image = align.crop_to_image_from_mesh(mesh)
        crops = align.extract_crops(image, crop_to_image)
        out = self.facemesh(crops.to(self.device), taps=taps)
        keep = (out.presence >= self.min_presence).cpu()
        crop_to_image = crop_to_image[keep]
        mesh = align.mesh_to_image(crop_to_image, out.mesh.float().cpu()[keep])
        return Faces(
            boxes=detections.boxes[keep],
            scores=detections.scores[keep],
            keypoints6=detections.keypoints[keep],
            presence=out.presence.float().cpu()[keep],
            mesh=mesh,
            landmarks68=ibug68(mesh[..., :2]),
            crop_to_image=crop_to_image,
            crops=crops[keep],
            taps={s: t[keep.to(t.device)] for s, t in out.taps.items()},
        )
