"""Read a :class:`~keyfer.data.labels.Sample`'s image: the one image reader of training and eval.

A sample is read from its file or its in-memory ``pixels``. With a ``box`` (AffectNet's CSV face
box, a detector-style box around the face), :func:`load_sample_image` cuts out the square of side
``BOX_CONTEXT`` x the box's longer side around the box centre: a pre-cropped face in the FERPlus
sense (the face from the brows to the chin filling a square), which
:func:`keyfer.preprocessing.prepare_face` then pads with its margin for FaceMesh. Where the face
is in an image without a box is the sample's ``faces`` mode's business
(:func:`keyfer.data.crops.sample_crop`).

Coordinates: source-image pixels, pixel (i, j) spans [j, j + 1) x [i, i + 1), so its centre is at
integer + 0.5; a box (x, y, w, h) spans [x, x + w) x [y, y + h).
"""

from __future__ import annotations

import cv2
import numpy as np

from keyfer.data.labels import Sample
from keyfer.errors import ImageReadError
from keyfer.io.images import read_image, to_rgb_array

Box = tuple[float, float, float, float]
"""(x, y, w, h): top-left corner and size in source-image pixels."""

BOX_CONTEXT = 1.0
"""Side of the cut square over the face box's longer side. A detector-style face box already
spans brows to chin like a FERPlus crop; precrop's margin adds FaceMesh's context afterwards."""


def read_sample(sample: Sample) -> np.ndarray:
    """The whole image of ``sample`` as an (H, W, 3) uint8 RGB array, its box ignored.

    Raises :class:`ImageReadError` when the file cannot be read.
    """
    return to_rgb_array(sample.pixels) if sample.pixels is not None else read_image(sample.path)


def load_sample_image(sample: Sample) -> np.ndarray:
    """The pre-cropped face of ``sample`` as a uint8 RGB array: with a ``box``, the (S, S, 3)
    square around it (:func:`crop_face_box`); without one, the (H, W, 3) image as it is.

    Raises :class:`ImageReadError` when the file cannot be read or the box lies outside the image.
    """
    image = read_sample(sample)
    return image if sample.box is None else crop_face_box(image, sample.box, sample)


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


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """An (H, W, C) image centred in a square of side max(H, W), its edge pixels repeated (as
    precrop pads); the odd pixel of an odd difference goes after (right or bottom). A square
    image is returned as it is."""
    height, width = image.shape[:2]
    if height == width:
        return image
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    bottom, right = side - height - top, side - width - left
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REPLICATE)
