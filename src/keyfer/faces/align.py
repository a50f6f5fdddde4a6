"""Similarity alignment of detected faces into FaceMesh's 192x192 crop, and back.

Convention everywhere: continuous pixel coordinates, a pixel's centre at integer + 0.5.
A face's alignment is the (2, 3) matrix ``crop_to_image`` that maps a crop point ``c`` to the
image point ``p = crop_to_image @ [c, 1]`` (:mod:`keyfer.geometry` applies and inverts it).
MediaPipe's ROI is used: centred on the detector box, square with side 1.5 x the box's longer
side, rotated so that the eyes are level.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from keyfer.faces.facemesh import CROP_SIZE
from keyfer.geometry import apply_affine

ROI_SCALE = 1.5
_RIGHT_EYE, _LEFT_EYE = 0, 1  # detector keypoints; the subject's right eye is on the viewer's left
_MESH_RIGHT_EYE_OUTER, _MESH_LEFT_EYE_OUTER = 33, 263


def crop_to_image_from_detections(
    boxes: torch.Tensor, keypoints: torch.Tensor | None
) -> torch.Tensor:
    """(N, 2, 3) crop->image similarity transforms from boxes (N, 4) and keypoints (N, 6, 2),
    the eyes levelled; upright crops when ``keypoints`` is None."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = ROI_SCALE * (boxes[:, 2:] - boxes[:, :2]).amax(dim=1)
    if keypoints is None:
        angle = torch.zeros_like(side)
    else:
        eye_line = keypoints[:, _LEFT_EYE] - keypoints[:, _RIGHT_EYE]
        angle = torch.atan2(eye_line[:, 1], eye_line[:, 0])
    return similarity(centre, side / CROP_SIZE, angle)


def crop_to_image_from_mesh(mesh: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) transforms from a previous (N, 468, 2+) image-space mesh, as MediaPipe tracks:
    the mesh's bounding box, rotation from the outer eye corners (vertices 33 and 263)."""
    xy = mesh[..., :2]
    low, high = xy.amin(dim=1), xy.amax(dim=1)
    side = ROI_SCALE * (high - low).amax(dim=1)
    eye_line = xy[:, _MESH_LEFT_EYE_OUTER] - xy[:, _MESH_RIGHT_EYE_OUTER]
    angle = torch.atan2(eye_line[:, 1], eye_line[:, 0])
    return similarity((low + high) / 2, side / CROP_SIZE, angle)


def similarity(centre: torch.Tensor, scale: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) transforms mapping the crop centre (96, 96) to ``centre`` (N, 2), scaling by
    ``scale`` (N,) image pixels per crop pixel and rotating by ``angle`` (N,) radians (clockwise
    on screen, since y points down)."""
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    half = CROP_SIZE / 2
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    translation = centre - (linear @ torch.full_like(centre, half).unsqueeze(-1)).squeeze(-1)
    return torch.cat([linear, translation.unsqueeze(-1)], dim=-1)


def mesh_to_image(transforms: torch.Tensor, mesh: torch.Tensor) -> torch.Tensor:
    """Map a (N, 468, 3) crop mesh to image pixels; z is scaled like x (MediaPipe's convention)."""
    scale = torch.linalg.det(transforms[:, :, :2]).sqrt()
    xy = apply_affine(transforms, mesh[..., :2])
    return torch.cat([xy, mesh[..., 2:] * scale[:, None, None]], dim=-1)


def extract_crops(image: np.ndarray, crop_to_image: torch.Tensor) -> torch.Tensor:
    """Sample (N, 3, 192, 192) float crops in [0, 1] from an (H, W, 3) uint8 image.

    Bilinear, with the image's edge pixels replicated outside it. The transform is handed to
    OpenCV as is, which reads it with pixel centres at integers: that is how MediaPipe samples
    its crops, and FaceMesh's outputs then match MediaPipe's (to 0.05 px median on AFW) instead of
    moving by up to (scale - 1) / 2 pixels. The outputs are still read in keyfer's convention.
    """
    crops = np.empty((len(crop_to_image), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    for crop, matrix in zip(crops, crop_to_image.double().numpy(), strict=True):
        cv2.warpAffine(
            image, matrix, (CROP_SIZE, CROP_SIZE), dst=crop,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0)
