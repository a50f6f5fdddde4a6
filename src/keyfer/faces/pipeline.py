"""Image -> faces: detection, alignment, FaceMesh, and the mesh mapped back to the image."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from keyfer.faces import align
from keyfer.faces.detector import Detections, FaceDetector
from keyfer.faces.facemesh import FaceMesh, FaceMeshOutput
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


@dataclass(frozen=True)
class Located:
    """Faces found and aligned in one image, before FaceMesh: the detections, their (N, 2, 3)
    ``crop_to_image`` transforms and (N, 3, 192, 192) RGB ``crops`` in [0, 1]."""

    detections: Detections
    crop_to_image: torch.Tensor
    crops: torch.Tensor


class FacePipeline:
    """Detector + alignment + FaceMesh, frozen, for images of any size.

    Faces whose FaceMesh presence is below ``min_presence`` are dropped as false detections.
    ``facemesh`` shares an already loaded frozen FaceMesh instead of loading another;
    ``detector_network`` replaces the detector's network (see :class:`FaceDetector`).
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        tiling: bool = True,
        detector_threshold: float = 0.5,
        min_presence: float = DEFAULT_MIN_PRESENCE,
        refine: int = 0,
        facemesh: FaceMesh | None = None,
        detector_network: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.detector = FaceDetector(
            detector_threshold, tiling=tiling, device=self.device, network=detector_network
        )
        self.facemesh = facemesh or FaceMesh.from_pretrained().to(self.device)
        self.min_presence = min_presence
        self.refine = refine

    def locate(self, image: np.ndarray) -> Located:
        """Detection and alignment (and the ``refine`` passes) of one (H, W, 3) RGB image."""
        return self.locate_batch([image])[0]

    @torch.inference_mode()
    def locate_batch(self, images: Sequence[np.ndarray]) -> list[Located]:
        """:meth:`locate` for many images, with their detector views batched together."""
        return [
            self._align(image, detections)
            for image, detections in zip(images, self.detector.detect_batch(images), strict=True)
        ]

    def _align(self, image: np.ndarray, detections: Detections) -> Located:
        crop_to_image = align.crop_to_image_from_detections(detections.boxes, detections.keypoints)
        for _ in range(self.refine):
            crops = align.extract_crops(image, crop_to_image)
            out = self.facemesh(crops.to(self.device))
            mesh = align.mesh_to_image(crop_to_image, out.mesh.float().cpu())
            crop_to_image = align.crop_to_image_from_mesh(mesh)
        return Located(detections, crop_to_image, align.extract_crops(image, crop_to_image))

    def kept(self, presence: torch.Tensor) -> torch.Tensor:
        """(N,) bool on the CPU: the faces whose FaceMesh ``presence`` (N,) is high enough."""
        return (presence >= self.min_presence).cpu()

    def finish(self, located: Located, out: FaceMeshOutput) -> Faces:
        """:class:`Faces` from located faces and FaceMesh's output on their crops."""
        keep = self.kept(out.presence)
        crop_to_image = located.crop_to_image[keep]
        mesh = align.mesh_to_image(crop_to_image, out.mesh.float().cpu()[keep])
        detections = located.detections
        return Faces(
            boxes=detections.boxes[keep],
            scores=detections.scores[keep],
            keypoints6=detections.keypoints[keep],
            presence=out.presence.float().cpu()[keep],
            mesh=mesh,
            landmarks68=ibug68(mesh[..., :2]),
            crop_to_image=crop_to_image,
            crops=located.crops[keep],
            taps={s: t[keep.to(t.device)] for s, t in out.taps.items()},
        )

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, taps: Iterable[int] = ()) -> Faces:
        """Find the faces of an (H, W, 3) uint8 RGB image and their landmarks."""
        located = self.locate(image)
        return self.finish(located, self.facemesh(located.crops.to(self.device), taps=taps))

    @torch.inference_mode()
    def batch(self, images: Sequence[np.ndarray], batch_size: int = 32) -> list[Faces]:
        """:meth:`__call__` for many images, with FaceMesh run on up to ``batch_size`` crops at
        a time across images (faster per face); no taps."""
        located = self.locate_batch(images)
        crops = torch.cat([found.crops for found in located])
        outputs = [self.facemesh(chunk.to(self.device)) for chunk in crops.split(batch_size)]
        mesh = torch.cat([o.mesh for o in outputs]) if outputs else torch.zeros(0, 468, 3)
        presence = torch.cat([o.presence for o in outputs]) if outputs else torch.zeros(0)
        faces, start = [], 0
        for found in located:
            stop = start + len(found.crops)
            out = FaceMeshOutput(mesh[start:stop], presence[start:stop], {})
            faces.append(self.finish(found, out))
            start = stop
        return faces
