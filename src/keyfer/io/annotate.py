"""Drawing faces on images for ``--annotate``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from keyfer.faces.pipeline import Faces

_BOX = (0, 255, 0)
_LANDMARK = (255, 64, 64)
_KEYPOINT = (0, 160, 255)


def draw_faces(image: np.ndarray, faces: Faces, labels: Sequence[str] = ()) -> np.ndarray:
    """A copy of an (H, W, 3) RGB image with each face's box, 68 landmarks and 6 keypoints,
    and, when given, one text label per face above its box."""
    canvas = np.ascontiguousarray(image.copy())
    thickness = max(1, round(max(image.shape[:2]) / 500))
    for index, (box, landmarks, keypoints) in enumerate(
        zip(faces.boxes.numpy(), faces.landmarks68.numpy(), faces.keypoints6.numpy(), strict=True)
    ):
        # OpenCV draws at integer pixel centres; keyfer's centres are at +0.5.
        x0, y0, x1, y1 = np.round(box - 0.5).astype(int)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), _BOX, thickness, cv2.LINE_AA)
        if labels:
            scale = max(0.4, thickness * 0.5)
            cv2.putText(
                canvas,
                labels[index],
                (x0, max(12, y0 - 6)),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                _BOX,
                thickness,
                cv2.LINE_AA,
            )
        radius = max(1, round((x1 - x0) / 90))
        for points, colour in ((landmarks, _LANDMARK), (keypoints, _KEYPOINT)):
            for x, y in np.round(points - 0.5).astype(int):
                cv2.circle(canvas, (int(x), int(y)), radius, colour, -1, cv2.LINE_AA)
    return canvas


def save_rgb(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) RGB image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
