"""Read a :class:`~keyfer.data.labels.Sample`'s face: the one image loader of training and eval.

Every dataset comes out as a pre-cropped face in the FERPlus sense (the face from the brows to
the chin filling a square), which :func:`keyfer.preprocessing.prepare_face` then pads with its
margin for FaceMesh. A sample is read from its file or its in-memory ``pixels``, then:

- with a ``box`` (AffectNet's CSV face box, a detector-style box around the face), the square of
  side ``BOX_CONTEXT`` x the box's longer side around the box centre is cut out;
- with ``detect`` (an in-the-wild image without a box), BlazeFace finds the largest face and its
  box is turned into a FERPlus-like square (:func:`face_box_from_detection`);
- otherwise the image is taken as it is (a pre-cropped face: FERPlus, RAF-DB aligned, folders).

Coordinates: source-image pixels, pixel (i, j) spans [j, j + 1) x [i, i + 1), so its centre is at
integer + 0.5; a box (x, y, w, h) spans [x, x + w) x [y, y + h).
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from keyfer.data.labels import Sample
from keyfer.errors import ImageReadError
from keyfer.faces.detector import FaceDetector
from keyfer.io.images import read_image, to_rgb_array

Box = tuple[float, float, float, float]
"""(x, y, w, h): top-left corner and size in source-image pixels."""

BOX_CONTEXT = 1.0
"""Side of the cut square over the face box's longer side. A detector-style face box already
spans brows to chin like a FERPlus crop; precrop's margin adds FaceMesh's context afterwards."""

# Measured on 150 FERPlus train faces (seed 0) upscaled into a mid-gray canvas: the median
# FERPlus crop is 1.20 x BlazeFace's longer box side, centred 0.11 box sides above its centre.
DETECTION_SCALE = 1.2
DETECTION_RAISE = 0.11


def load_sample_image(sample: Sample) -> np.ndarray:
    """The face of ``sample`` as an (S, S, 3) uint8 RGB array (any shape for an unboxed file).

    Raises :class:`ImageReadError` when the file cannot be read, the box lies outside the image,
    or (with ``detect``) no face is found.
    """
    image = to_rgb_array(sample.pixels) if sample.pixels is not None else read_image(sample.path)
    box = sample.box
    if sample.faces == "detect":
        box = _detect(image, sample)
    return image if box is None else crop_face_box(image, box, sample)


def crop_face_box(image: np.ndarray, box: Box, sample: Sample | None = None) -> np.ndarray:
    """The (S, S, 3) square of side ``round(BOX_CONTEXT * max(w, h))`` centred on ``box``, cut
    from an (H, W, 3) image; parts outside the image repeat its edge pixels (as precrop pads)."""
    x, y, w, h = box
    height, width = image.shape[:2]
    if not (w > 0 and h > 0 and x < width and y < height and x + w > 0 and y + h > 0):
        where = sample.path if sample is not None else "the image"
        raise ImageReadError(f"face box {box} lies outside {where} ({width}x{height})")
    side = max(1, round(BOX_CONTEXT * max(w, h)))
    left, top = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
    pads = (max(0, -top), max(0, top + side - height), max(0, -left), max(0, left + side - width))
    if any(pads):
        image = cv2.copyMakeBorder(image, *pads, cv2.BORDER_REPLICATE)
        top, left = top + pads[0], left + pads[2]
    return np.ascontiguousarray(image[top : top + side, left : left + side])


def face_box_from_detection(x0: float, y0: float, x1: float, y1: float) -> Box:
    """A BlazeFace box (corners x0, y0, x1, y1) -> the square FERPlus-like face box (x, y, w, h):
    ``DETECTION_SCALE`` x its longer side, raised by ``DETECTION_RAISE`` sides."""
    long_side = max(x1 - x0, y1 - y0)
    side = DETECTION_SCALE * long_side
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - DETECTION_RAISE * long_side
    return cx - side / 2, cy - side / 2, side, side


@cache
def _detector() -> FaceDetector:
    return FaceDetector()


def _detect(image: np.ndarray, sample: Sample) -> Box:
    """The FERPlus-like box of the largest face BlazeFace finds in ``image``."""
    boxes = _detector()(image).boxes
    if len(boxes) == 0:
        raise ImageReadError(f"no face found in {sample.path}")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return face_box_from_detection(*boxes[int(areas.argmax())].tolist())
