"""Face detection with BlazeFace short-range: letterboxing, optional tiling, decoding and NMS.

All outputs are in original image pixels, a pixel's centre at integer + 0.5.
The short-range model sees the whole image letterboxed into 128x128, so faces smaller than about
an eighth of the image's long side are missed. ``tiling=True`` adds overlapping square tiles at
1/2 and 1/4 of the long side, run in the same batch, and merges everything with weighted NMS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from keyfer.faces.anchors import INPUT_SIZE, short_range_anchors
from keyfer.faces.blazeface import BlazeFace
from keyfer.faces.nms import box_iou, weighted_nms

NUM_KEYPOINTS = 6
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_tragion", "left_tragion")
_TILE_FRACTIONS = (0.5, 0.25)
_TILE_OVERLAP = 0.25
_MIN_TILE = 160  # px; smaller tiles only find faces too small for FaceMesh to be useful
_CUT_TOLERANCE = 0.02  # fraction of a tile a box may cross an inner tile edge


@dataclass(frozen=True)
class Detections:
    """Faces found in one image: ``boxes`` (N, 4) as (x0, y0, x1, y1), ``keypoints`` (N, 6, 2)
    as (x, y) in :data:`KEYPOINT_NAMES` order (the subject's right eye first), ``scores`` (N,)."""

    boxes: torch.Tensor
    keypoints: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class _View:
    """A window of the image ``[x0, x0+side) x [y0, y0+side)`` (it may reach past the image),
    scaled into the detector input; ``inner_edges`` marks which of its left, top, right, bottom
    edges lie inside the image, where a face can be cut."""

    x0: float
    y0: float
    side: int
    inner_edges: tuple[bool, bool, bool, bool]


def plan_views(width: int, height: int, tiling: bool) -> list[_View]:
    """The letterboxed whole image, plus overlapping square tiles when ``tiling`` is on."""
    long_side = max(width, height)
    views = [_View((width - long_side) / 2, (height - long_side) / 2, long_side, (False,) * 4)]
    if not tiling:
        return views
    for fraction in _TILE_FRACTIONS:
        side = round(long_side * fraction)
        if side < _MIN_TILE:
            break
        for y0 in _tile_starts(height, side):
            for x0 in _tile_starts(width, side):
                inner = (x0 > 0, y0 > 0, x0 + side < width, y0 + side < height)
                views.append(_View(x0, y0, side, inner))
    return views


def _tile_starts(length: int, side: int) -> list[float]:
    if side >= length:
        return [(length - side) / 2]
    count = math.ceil((length - side) / (side * (1 - _TILE_OVERLAP))) + 1
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def _render_view(image: np.ndarray, view: _View) -> tuple[np.ndarray, np.ndarray]:
    """The 128x128 detector input of a view, sampled as MediaPipe's ImageToTensor does (bilinear,
    black outside the image), and (scale, offset_x, offset_y) such that an input coordinate u maps
    to the image coordinate u * scale + offset."""
    scale = view.side / INPUT_SIZE
    input_to_image = np.array([[scale, 0.0, view.x0], [0.0, scale, view.y0]])
    canvas = cv2.warpAffine(
        image, input_to_image, (INPUT_SIZE, INPUT_SIZE),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
    )  # fmt: skip
    return canvas, np.array([scale, view.x0, view.y0])


class FaceDetector:
    """BlazeFace short-range with MediaPipe's decoding and weighted NMS, for any image size.

    ``score_threshold`` is MediaPipe's 0.5 by default; ``iou_threshold`` its 0.3.
    """

    def __init__(
        self,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.3,
        tiling: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.tiling = tiling
        self.device = torch.device(device)
        self.network = BlazeFace.from_pretrained().to(self.device)
        self.anchors = short_range_anchors().to(self.device) * INPUT_SIZE

    def __call__(self, image: np.ndarray) -> Detections:
        """Detect faces in an (H, W, 3) uint8 RGB image."""
        return self.detect_batch([image])[0]

    @torch.inference_mode()
    def detect_batch(self, images: Sequence[np.ndarray], max_views: int = 64) -> list[Detections]:
        """Detect faces in each (H, W, 3) uint8 RGB image; the views of all the images (whole
        image and tiles) go through BlazeFace together, up to ``max_views`` per call."""
        if not images:
            return []
        plans = [plan_views(image.shape[1], image.shape[0], self.tiling) for image in images]
        rendered = [
            _render_view(image, view)
            for image, views in zip(images, plans, strict=True)
            for view in views
        ]
        batch = torch.from_numpy(np.stack([canvas for canvas, _ in rendered])).to(self.device)
        batch = batch.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        outputs = [self.network(chunk) for chunk in batch.split(max_views)]
        regressors = torch.cat([r for r, _ in outputs])
        logits = torch.cat([c for _, c in outputs])
        results, start = [], 0
        for views in plans:
            stop = start + len(views)
            found = [
                self._view_detections(view, affine, reg, logit)
                for view, (_, affine), reg, logit in zip(
                    views, rendered[start:stop], regressors[start:stop], logits[start:stop],
                    strict=True,
                )
            ]  # fmt: skip
            results.append(self._merge(found))
            start = stop
        return results

    def _view_detections(self, view: _View, affine: np.ndarray, reg, logit):
        boxes, keypoints, scores = self._to_image(
            *self._decode(reg, logit), torch.as_tensor(affine, dtype=torch.float32)
        )
        keep = self._uncut(boxes, view)
        return boxes[keep], keypoints[keep], scores[keep]

    def _merge(self, found: list[tuple[torch.Tensor, ...]]) -> Detections:
        """One image's detections: the whole-image view's, plus the faces only tiles found."""
        whole = weighted_nms(*found[0], self.iou_threshold)
        if len(found) > 1:
            tiles = weighted_nms(
                *(torch.cat(t) for t in zip(*found[1:], strict=True)), self.iou_threshold
            )
            # The whole-image pass is MediaPipe's own; tiles only add the faces it missed.
            new = [bool((box_iou(whole[0], box) <= self.iou_threshold).all()) for box in tiles[0]]
            new = torch.tensor(new, dtype=torch.bool)
            whole = tuple(torch.cat([w, t[new]]) for w, t in zip(whole, tiles, strict=True))
        return Detections(*(t.cpu() for t in whole))

    def _decode(self, regressors: torch.Tensor, logits: torch.Tensor):
        """Boxes (N, 4) and keypoints (N, 6, 2) in input pixels, scores (N,), above threshold."""
        scores = torch.sigmoid(logits.clamp(-100, 100))
        keep = scores >= self.score_threshold
        reg, anchors = regressors[keep], self.anchors[keep]
        centre = reg[:, :2] + anchors
        half = reg[:, 2:4] / 2
        boxes = torch.cat([centre - half, centre + half], dim=1)
        keypoints = reg[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None]
        return boxes, keypoints, scores[keep]

    @staticmethod
    def _to_image(boxes, keypoints, scores, affine: torch.Tensor):
        scale, offset = affine[0].item(), affine[1:].to(boxes.device)
        return boxes * scale + offset.repeat(2), keypoints * scale + offset, scores

    @staticmethod
    def _uncut(boxes: torch.Tensor, view: _View) -> torch.Tensor:
        """Drop a tile's detections that cross one of its edges inside the image (cut faces)."""
        keep = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
        tolerance = _CUT_TOLERANCE * view.side
        edges = (view.x0, view.y0, view.x0 + view.side, view.y0 + view.side)
        for column, (inner, edge) in enumerate(zip(view.inner_edges, edges, strict=True)):
            if inner:
                beyond = edge - boxes[:, column] if column < 2 else boxes[:, column] - edge
                keep &= beyond <= tolerance
        return keep
