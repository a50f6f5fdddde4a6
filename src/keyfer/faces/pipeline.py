"""Image -> faces: detection, alignment, FaceMesh, and the mesh mapped back to the image."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from keyfer.deprecation import deprecated_alias
from keyfer.errors import KeyferError
from keyfer.faces import align
from keyfer.faces.detector import Detections, FaceDetector
from keyfer.faces.facemesh import FaceMesh, FaceMeshOutput
from keyfer.faces.ibug68 import ibug68

DEFAULT_MIN_PRESENCE = 0.5
Boxes = np.ndarray | torch.Tensor | Sequence[Sequence[float]]
"""(N, 4) face boxes x0, y0, x1, y1 in image pixels, as an array, a CPU tensor or nested lists."""


class Detector(Protocol):
    """A face detector :class:`FacePipeline` can use (keyfer's is :class:`FaceDetector`).

    ``detect_batch`` takes (H, W, 3) uint8 RGB images and returns one :class:`Detections` per
    image, in image pixels with pixel centres at integer + 0.5: ``boxes`` (N, 4) as x0, y0, x1,
    y1 on the CPU, ``scores`` (N,) or None, and ``keypoints`` (N, 6, 2) in
    :data:`~keyfer.faces.detector.KEYPOINT_NAMES` order or None. The pipeline's crop is
    MediaPipe's: centred on the box, 1.5 x its longer side, so boxes about as tight as
    BlazeFace's (brows to chin) work best. Keypoints level the crop by the eyes (the first two
    points); without them the crop is upright.
    """

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]: ...


@dataclass(frozen=True)
class DetectedFaces:
    """The N faces the pipeline found in one image, in original image pixels (pixel centres at
    integer + 0.5), as tensors on the CPU (``taps`` on the pipeline's device).

    ``boxes`` (N, 4) x0, y0, x1, y1; ``scores`` (N,) detector scores; ``keypoints6`` (N, 6, 2);
    ``presence`` (N,) FaceMesh face presence; ``mesh`` (N, 468, 3) with z in the x pixel scale;
    ``landmarks68`` (N, 68, 2); ``crop_to_image`` (N, 2, 3) each face's alignment;
    ``crops`` (N, 3, 192, 192) the aligned RGB crops in [0, 1]; ``taps`` {stride: (N, C, h, w)}.
    ``scores`` and ``keypoints6`` are None for faces whose boxes were given, not detected.
    """

    boxes: torch.Tensor
    scores: torch.Tensor | None
    keypoints6: torch.Tensor | None
    presence: torch.Tensor
    mesh: torch.Tensor
    landmarks68: torch.Tensor
    crop_to_image: torch.Tensor
    crops: torch.Tensor
    taps: dict[int, torch.Tensor]

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class Located:
    """Faces found and aligned in one image, before FaceMesh: the detections, their (N, 2, 3)
    ``crop_to_image`` transforms and (N, 3, 192, 192) RGB ``crops`` in [0, 1]. ``given``:
    the boxes came from the caller, and every one is kept whatever FaceMesh's presence."""

    detections: Detections
    crop_to_image: torch.Tensor
    crops: torch.Tensor
    given: bool = False


def given_detections(boxes: Boxes) -> Detections:
    """:class:`Detections` of caller-supplied (N, 4) boxes x0, y0, x1, y1 in image pixels
    (pixel centres at integer + 0.5), without scores or keypoints. Raises :class:`KeyferError`
    for another shape, a value that is not finite, or a box without area."""
    try:
        tensor = torch.as_tensor(boxes, dtype=torch.float32).cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise KeyferError(f"boxes must be an (N, 4) array of numbers: {error}") from error
    if tensor.numel() == 0:
        tensor = tensor.reshape(0, 4)
    if tensor.ndim != 2 or tensor.shape[1] != 4:
        raise KeyferError(f"boxes must be (N, 4) x0, y0, x1, y1, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all() or not (tensor[:, 2:] > tensor[:, :2]).all():
        raise KeyferError("boxes must be finite x0, y0, x1, y1 with x1 > x0 and y1 > y0")
    return Detections(tensor, None, None)


class FacePipeline:
    """Detector + alignment + FaceMesh, frozen, for images of any size.

    Faces whose FaceMesh presence is below ``min_presence`` are dropped as false detections.
    ``facemesh`` shares an already loaded frozen FaceMesh instead of loading another;
    ``detector_network`` replaces the detector's network (see :class:`FaceDetector`), and
    ``detector`` replaces keyfer's detector with any :class:`Detector` (``tiling``,
    ``detector_threshold`` and ``detector_network`` then do not apply).
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
        detector: Detector | None = None,
    ) -> None:
        self.device = torch.device(device)
        if detector is not None and detector_network is not None:
            raise KeyferError("give a detector or a detector_network, not both")
        self.detector: Detector = detector or FaceDetector(
            detector_threshold, tiling=tiling, device=self.device, network=detector_network
        )
        self.facemesh = facemesh or FaceMesh.from_pretrained().to(self.device)
        self.min_presence = min_presence
        self.refine = refine

    def locate(self, image: np.ndarray, boxes: Boxes | None = None) -> Located:
        """Detection and alignment (and the ``refine`` passes) of one (H, W, 3) RGB image;
        ``boxes`` (N, 4) replace the detector (see :meth:`locate_batch`)."""
        return self.locate_batch([image], None if boxes is None else [boxes])[0]

    @torch.inference_mode()
    def locate_batch(
        self, images: Sequence[np.ndarray], boxes: Sequence[Boxes] | None = None
    ) -> list[Located]:
        """:meth:`locate` for many images, with their detector views batched together. With
        ``boxes`` (one (N, 4) array of x0, y0, x1, y1 per image, image pixels), the faces are
        those boxes, each kept (see :func:`given_detections` and :class:`Detector`)."""
        if boxes is None:
            found = self.detector.detect_batch(images)
        elif len(boxes) != len(images):
            raise KeyferError(f"{len(boxes)} box arrays for {len(images)} images")
        else:
            found = [given_detections(b) for b in boxes]
        return [
            self._align(image, detections, boxes is not None)
            for image, detections in zip(images, found, strict=True)
        ]

    def _align(self, image: np.ndarray, detections: Detections, given: bool) -> Located:
        crop_to_image = align.crop_to_image_from_detections(detections.boxes, detections.keypoints)
        for _ in range(self.refine):
            crops = align.extract_crops(image, crop_to_image)
            out = self.facemesh(crops.to(self.device))
            mesh = align.mesh_to_image(crop_to_image, out.mesh.float().cpu())
            crop_to_image = align.crop_to_image_from_mesh(mesh)
        crops = align.extract_crops(image, crop_to_image)
        return Located(detections, crop_to_image, crops, given)

    def kept(self, presence: torch.Tensor) -> torch.Tensor:
        """(N,) bool on the CPU: the faces whose FaceMesh ``presence`` (N,) is high enough."""
        return (presence >= self.min_presence).cpu()

    def finish(self, located: Located, out: FaceMeshOutput) -> DetectedFaces:
        """:class:`DetectedFaces` from located faces and FaceMesh's output on their crops."""
        keep = torch.ones(len(located.crops), dtype=torch.bool)
        if not located.given:
            keep = self.kept(out.presence)
        crop_to_image = located.crop_to_image[keep]
        mesh = align.mesh_to_image(crop_to_image, out.mesh.float().cpu()[keep])
        detections = located.detections
        return DetectedFaces(
            boxes=detections.boxes[keep],
            scores=None if detections.scores is None else detections.scores[keep],
            keypoints6=None if detections.keypoints is None else detections.keypoints[keep],
            presence=out.presence.float().cpu()[keep],
            mesh=mesh,
            landmarks68=ibug68(mesh[..., :2]),
            crop_to_image=crop_to_image,
            crops=located.crops[keep],
            taps={s: t[keep.to(t.device)] for s, t in out.taps.items()},
        )

    @torch.inference_mode()
    def __call__(
        self, image: np.ndarray, taps: Iterable[int] = (), boxes: Boxes | None = None
    ) -> DetectedFaces:
        """Find the faces of an (H, W, 3) uint8 RGB image and their landmarks; with ``boxes``
        (N, 4), the faces in those boxes instead, one each, in order."""
        located = self.locate(image, boxes)
        return self.finish(located, self.facemesh(located.crops.to(self.device), taps=taps))

    @torch.inference_mode()
    def batch(
        self,
        images: Sequence[np.ndarray],
        batch_size: int = 32,
        boxes: Sequence[Boxes] | None = None,
    ) -> list[DetectedFaces]:
        """:meth:`__call__` for many images, with FaceMesh run on up to ``batch_size`` crops at
        a time across images (faster per face); no taps. ``boxes``: see :meth:`locate_batch`."""
        located = self.locate_batch(images, boxes)
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


__getattr__ = deprecated_alias(
    __name__,
    "Faces",
    DetectedFaces,
    "keyfer.faces.pipeline.Faces is now DetectedFaces; the old name goes in keyfer 0.4",
)
