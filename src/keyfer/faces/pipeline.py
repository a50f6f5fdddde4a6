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
from keyfer.faces.facemesh import CROP_SIZE, FaceMesh, FaceMeshOutput
from keyfer.faces.ibug68 import ibug68
from keyfer.preprocessing import DEFAULT_MARGIN

DEFAULT_MIN_PRESENCE = 0.5
WHOLE_IMAGE_MIN_PRESENCE = 0.1
"""FaceMesh presence a whole image needs to be taken as one face when the detector finds none
(the whole-image fallback): the lowest with at most 1% false faces on face-free crops of AFW
photos; it keeps 97% of FERPlus Valid and SFEW Train as whole images
(``docs/results/whole_image_threshold.md``)."""
WHOLE_IMAGE_MARGIN = DEFAULT_MARGIN
"""Context around a whole image taken as a face crop, as a fraction of its longer side on each
side: the pre-crop margin a model gets for a tight face crop (:mod:`keyfer.preprocessing`)."""
FOUND_BY = ("detector", "whole-image", "given")
"""How a face was found: by the detector, as the whole image (the fallback for an image where
the detector finds none: a tight face crop), or from a box the caller gave."""
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
    ``found_by`` (one of :data:`FOUND_BY`) says how the faces of this image were found; a
    ``whole-image`` face's box is the image's bounds.
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
    found_by: str = "detector"

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class Located:
    """Faces found and aligned in one image, before FaceMesh: the detections, their (N, 2, 3)
    ``crop_to_image`` transforms and (N, 3, 192, 192) RGB ``crops`` in [0, 1]. ``found_by``
    (:data:`FOUND_BY`): ``given`` boxes are all kept whatever FaceMesh's presence; detector and
    whole-image faces need their presence threshold."""

    detections: Detections
    crop_to_image: torch.Tensor
    crops: torch.Tensor
    found_by: str = "detector"


def whole_image_transform(height: int, width: int) -> torch.Tensor:
    """(1, 2, 3) crop->image transform that takes an (H, W) image as one face crop, upright: the
    image centred in a square of its longer side, plus :data:`WHOLE_IMAGE_MARGIN` of that side on
    each side (what :func:`keyfer.preprocessing.precrop_to_facemesh` gives a tight face crop;
    outside the image its edge pixels repeat)."""
    side = max(height, width) * (1 + 2 * WHOLE_IMAGE_MARGIN)
    centre = torch.tensor([[width / 2, height / 2]])
    return align.similarity(centre, torch.tensor([side / CROP_SIZE]), torch.zeros(1))


def whole_image_located(image: np.ndarray) -> Located:
    """The whole (H, W, 3) image located as one face (:func:`whole_image_transform`), its box
    the image's bounds."""
    height, width = image.shape[:2]
    crop_to_image = whole_image_transform(height, width)
    box = torch.tensor([[0.0, 0.0, float(width), float(height)]])
    crops = align.extract_crops(image, crop_to_image)
    return Located(Detections(box, None, None), crop_to_image, crops, "whole-image")


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

    ``fallback``: in an image where no face is found (none detected, or none with enough
    presence), the whole image is tried as one face crop (:func:`whole_image_transform`), kept
    when its presence reaches ``whole_image_min_presence``; such faces have ``found_by``
    ``whole-image``. A tight face crop, which the detector tends to miss, then still gives its
    face. Never applied to caller-given boxes.
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
        fallback: bool = True,
        whole_image_min_presence: float = WHOLE_IMAGE_MIN_PRESENCE,
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
        self.fallback = fallback
        self.whole_image_min_presence = whole_image_min_presence

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
        found_by = "detector" if boxes is None else "given"
        return [
            self._align(image, detections, found_by)
            for image, detections in zip(images, found, strict=True)
        ]

    def _align(self, image: np.ndarray, detections: Detections, found_by: str) -> Located:
        crop_to_image = align.crop_to_image_from_detections(detections.boxes, detections.keypoints)
        for _ in range(self.refine):
            crops = align.extract_crops(image, crop_to_image)
            out = self.facemesh(crops.to(self.device))
            mesh = align.mesh_to_image(crop_to_image, out.mesh.float().cpu())
            crop_to_image = align.crop_to_image_from_mesh(mesh)
        crops = align.extract_crops(image, crop_to_image)
        return Located(detections, crop_to_image, crops, found_by)

    def kept(self, presence: torch.Tensor, found_by: str = "detector") -> torch.Tensor:
        """(N,) bool on the CPU: the faces whose FaceMesh ``presence`` (N,) is high enough for
        faces found by ``found_by`` (caller-given boxes are all kept)."""
        if found_by == "given":
            return torch.ones(len(presence), dtype=torch.bool)
        threshold = (
            self.whole_image_min_presence if found_by == "whole-image" else self.min_presence
        )
        return (presence >= threshold).cpu()

    def finish(self, located: Located, out: FaceMeshOutput) -> DetectedFaces:
        """:class:`DetectedFaces` from located faces and FaceMesh's output on their crops."""
        keep = self.kept(out.presence, located.found_by)
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
            found_by=located.found_by,
        )

    def needs_fallback(self, faces: DetectedFaces) -> bool:
        """Whether the whole image is to be tried as a face: ``fallback`` is on, and the
        detector (not caller-given boxes) left no face."""
        return self.fallback and len(faces) == 0 and faces.found_by == "detector"

    @torch.inference_mode()
    def __call__(
        self, image: np.ndarray, taps: Iterable[int] = (), boxes: Boxes | None = None
    ) -> DetectedFaces:
        """Find the faces of an (H, W, 3) uint8 RGB image and their landmarks; with ``boxes``
        (N, 4), the faces in those boxes instead, one each, in order."""
        taps = tuple(taps)
        located = self.locate(image, boxes)
        faces = self.finish(located, self.facemesh(located.crops.to(self.device), taps=taps))
        if self.needs_fallback(faces):
            located = whole_image_located(image)
            faces = self.finish(located, self.facemesh(located.crops.to(self.device), taps=taps))
        return faces

    @torch.inference_mode()
    def batch(
        self,
        images: Sequence[np.ndarray],
        batch_size: int = 32,
        boxes: Sequence[Boxes] | None = None,
    ) -> list[DetectedFaces]:
        """:meth:`__call__` for many images, with FaceMesh run on up to ``batch_size`` crops at
        a time across images (faster per face); no taps. ``boxes``: see :meth:`locate_batch`.
        The whole-image fallback runs as a second batch over the images left without a face."""
        faces = self._mesh_batch(self.locate_batch(images, boxes), batch_size)
        empty = [i for i, found in enumerate(faces) if self.needs_fallback(found)]
        retried = self._mesh_batch([whole_image_located(images[i]) for i in empty], batch_size)
        for index, found in zip(empty, retried, strict=True):
            faces[index] = found
        return faces

    def _mesh_batch(self, located: list[Located], batch_size: int) -> list[DetectedFaces]:
        """FaceMesh over the crops of ``located``, ``batch_size`` at a time across images."""
        if not located:
            return []
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
