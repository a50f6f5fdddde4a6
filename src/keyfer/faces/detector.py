"""Face detection with BlazeFace short-range: letterboxing, optional tiling, decoding and NMS.

All outputs are in original image pixels, a pixel's centre at integer + 0.5.
The short-range model sees the whole image letterboxed into 128x128, so faces smaller than about
an eighth of the image's long side are missed. ``tiling=True`` adds overlapping square tiles of
:data:`TILE_FRACTIONS` of the long side (by default one level, 1/3; at least 256 px), run in the
same batch, and adds the faces only the tiles found (``studies/2026-11-tiling/tiling_study.py``
measured the levels on AFW); a loose box that holds a better detection of the same face is then
dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from keyfer.faces.anchors import INPUT_SIZE, short_range_anchors
from keyfer.faces.blazeface import BlazeFace
from keyfer.faces.nms import holds_better, weighted_nms
from keyfer.geometry import box_iou

NUM_KEYPOINTS = 6
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_tragion", "left_tragion")
TILE_FRACTIONS = (1 / 3,)
_TILE_OVERLAP = 0.25
_MIN_TILE = 256  # px; smaller tiles would only add faces under about 30 px, too small to read
_CUT_TOLERANCE = 0.02  # fraction of a tile a box may cross an inner tile edge
_Found = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # boxes, keypoints, scores


@dataclass(frozen=True)
class Detections:
    """Faces found in one image: ``boxes`` (N, 4) as (x0, y0, x1, y1), ``keypoints`` (N, 6, 2)
    as (x, y) in :data:`KEYPOINT_NAMES` order (the subject's right eye first), ``scores`` (N,).
    Keypoints and scores are None for boxes that a caller gave (or a detector without them)."""

    boxes: torch.Tensor
    keypoints: torch.Tensor | None
    scores: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class _View:
    """A window of the image ``[x0, x0+side) x [y0, y0+side)`` (it may reach past the image),
    scaled into the detector input; ``inner_edges`` marks which of its left, top, right, bottom
    edges lie inside the image, where a face can be cut."""

    x0: float
    y0: float
    side: int
    inner_edges: tuple[bool, bool, bool, bool]


def plan_views(
    width: int, height: int, tiling: bool, fractions: Sequence[float] = TILE_FRACTIONS
) -> list[_View]:
    """The letterboxed whole image, plus, when ``tiling`` is on, overlapping square tiles whose
    sides are these fractions of the image's long side, but at least 256 px (no tiles when that
    is the whole long side)."""
    long_side = max(width, height)
    views = [_View((width - long_side) / 2, (height - long_side) / 2, long_side, (False,) * 4)]
    if not tiling:
        return views
    sides = dict.fromkeys(max(round(long_side * f), _MIN_TILE) for f in fractions)
    for side in (s for s in sides if s < long_side):
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

    ``score_threshold`` is MediaPipe's 0.5 by default; ``iou_threshold`` its 0.3;
    ``tile_fractions`` sets the tile levels of ``tiling`` (see :func:`plan_views`). ``network``
    replaces the PyTorch BlazeFace with another callable of the same signature (the onnx
    backend's :class:`keyfer.export.OnnxDetectorNetwork`).
    """

    def __init__(
        self,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.3,
        tiling: bool = True,
        device: torch.device | str = "cpu",
        network: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        tile_fractions: Sequence[float] = TILE_FRACTIONS,
    ) -> None:
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.tiling = tiling
        self.tile_fractions = tuple(tile_fractions)
        self.device = torch.device(device)
        if network is None:
            network = BlazeFace.from_pretrained().to(self.device)
        self.network = network
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
        plans = [
            plan_views(image.shape[1], image.shape[0], self.tiling, self.tile_fractions)
            for image in images
        ]
        views = [view for views in plans for view in views]
        rendered = [
            _render_view(image, view)
            for image, image_views in zip(images, plans, strict=True)
            for view in image_views
        ]
        batch = torch.from_numpy(np.stack([canvas for canvas, _ in rendered])).to(self.device)
        batch = batch.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        outputs = [self.network(chunk) for chunk in batch.split(max_views)]
        regressors = torch.cat([r for r, _ in outputs])
        logits = torch.cat([c for _, c in outputs])
        affines = torch.tensor(np.stack([affine for _, affine in rendered]), dtype=torch.float32)
        view_index, boxes, keypoints, scores = self._decode(regressors, logits, affines, views)
        results, start = [], 0
        for image_views in plans:
            stop = start + len(image_views)
            whole = view_index == start
            tiles = (view_index > start) & (view_index < stop)
            results.append(
                self._merge(
                    (boxes[whole], keypoints[whole], scores[whole]),
                    (boxes[tiles], keypoints[tiles], scores[tiles]),
                )
            )
            start = stop
        return results

    def _decode(
        self,
        regressors: torch.Tensor,
        logits: torch.Tensor,
        affines: torch.Tensor,
        views: Sequence[_View],
    ) -> tuple[torch.Tensor, ...]:
        """Decode the (V, 896, 16) regressors and (V, 896) logits of V views: the detections above
        threshold, as their view's index (N,), boxes (N, 4), keypoints (N, 6, 2) in image pixels
        and scores (N,), without the tile detections that cross a tile edge inside the image."""
        scores = torch.sigmoid(logits.clamp(-100, 100))
        view_index, anchor_index = (scores >= self.score_threshold).nonzero(as_tuple=True)
        reg, anchors = regressors[view_index, anchor_index], self.anchors[anchor_index]
        centre = reg[:, :2] + anchors
        half = reg[:, 2:4] / 2
        affine = affines.to(reg.device)[view_index]  # (N, 3): scale, offset x, offset y
        scale, offset = affine[:, :1], affine[:, 1:]
        boxes = torch.cat([centre - half, centre + half], dim=1) * scale + offset.repeat(1, 2)
        keypoints = reg[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None]
        keypoints = keypoints * scale[:, None] + offset[:, None]
        scores = scores[view_index, anchor_index]
        keep = self._uncut(boxes, view_index, views)
        return view_index[keep], boxes[keep], keypoints[keep], scores[keep]

    def _merge(self, whole: _Found, tiles: _Found) -> Detections:
        """One image's detections, each given as (boxes, keypoints, scores): the whole-image
        view's, plus the faces that only the tiles found, less the loose boxes that hold a
        better detection (:func:`holds_better`)."""
        boxes, keypoints, scores = weighted_nms(*whole, self.iou_threshold)
        if len(tiles[0]):
            tile_boxes, tile_keypoints, tile_scores = weighted_nms(*tiles, self.iou_threshold)
            # The whole-image pass is MediaPipe's own; tiles only add the faces it missed.
            new = (box_iou(tile_boxes, boxes) <= self.iou_threshold).all(dim=1)
            boxes = torch.cat([boxes, tile_boxes[new]])
            keypoints = torch.cat([keypoints, tile_keypoints[new]])
            scores = torch.cat([scores, tile_scores[new]])
            # A loose box around a face that another view found better is that face again.
            kept = ~holds_better(boxes, scores)
            boxes, keypoints, scores = boxes[kept], keypoints[kept], scores[kept]
        return Detections(boxes.cpu(), keypoints.cpu(), scores.cpu())

    @staticmethod
    def _uncut(boxes: torch.Tensor, view_index: torch.Tensor, views: Sequence[_View]):
        """(N,) mask: False for a tile's detection that crosses one of the tile's edges inside
        the image by more than the tolerance (a cut face)."""
        edges = torch.tensor(
            [(v.x0, v.y0, v.x0 + v.side, v.y0 + v.side) for v in views], device=boxes.device
        )[view_index]
        inner = torch.tensor([v.inner_edges for v in views], device=boxes.device)[view_index]
        tolerance = torch.tensor([_CUT_TOLERANCE * v.side for v in views], device=boxes.device)
        beyond = torch.cat([edges[:, :2] - boxes[:, :2], boxes[:, 2:] - edges[:, 2:]], dim=1)
        return ~(inner & (beyond > tolerance[view_index, None])).any(dim=1)
