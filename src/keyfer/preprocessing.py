"""A model's input preprocessing: the ``gray3`` colour mode, and a tight, pre-cropped face
(FERPlus 48x48, RAF-DB 100x100) prepared as a FaceMesh input crop.

FaceMesh expects a face with margin around it (MediaPipe crops 1.5x the detector box), so a
tight crop is padded by ``margin`` times its side on each side, then resized to 192x192.

Coordinates: pixels with a pixel's centre at integer + 0.5, the source crop spanning
[0, size) and the FaceMesh crop [0, 192). A source point x maps to ``x * scale + offset`` in the
FaceMesh crop, with ``(scale, offset) = precrop_transform(size, margin)``; both axes alike.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from keyfer.errors import KeyferError
from keyfer.faces.facemesh import CROP_SIZE

PADDINGS: dict[str, int] = {
    "edge": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
    "reflect": cv2.BORDER_REFLECT_101,
}
"""Padding mode -> OpenCV border type. ``constant`` pads with mid-gray :data:`PAD_VALUE`."""

PAD_VALUE = 128

# Chosen by the pre-crop margin study (docs/results/precrop_margin.md). A model records its own
# margin and padding (keyfer.models.info); these are what training gives a new model.
DEFAULT_MARGIN = 0.2
DEFAULT_PADDING = "edge"

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights for R, G, B: the ``gray3`` colour mode everywhere."""
_LUMA = np.array(LUMA_WEIGHTS, dtype=np.float32)


def margin_pixels(size: int, margin: float) -> int:
    """Pixels added on each side of a ``size`` crop for ``margin`` (rounded to whole pixels)."""
    if not 0.0 <= margin <= 1.0:
        raise KeyferError(
            f"precrop margin must be in [0, 1] (a fraction of the side), got {margin}"
        )
    return round(margin * size)


def precrop_transform(size: int, margin: float = DEFAULT_MARGIN) -> tuple[float, float]:
    """``(scale, offset)`` mapping a point of a ``size`` x ``size`` crop into the 192 crop.

    Pixel centres at integer + 0.5 in both frames: x_192 = x * scale + offset, and back,
    x = (x_192 - offset) / scale. Applies to x and y alike.
    """
    pad = margin_pixels(size, margin)
    scale = CROP_SIZE / (size + 2 * pad)
    return scale, pad * scale


def precrop_to_facemesh(
    image: np.ndarray, margin: float = DEFAULT_MARGIN, padding: str = DEFAULT_PADDING
) -> np.ndarray:
    """(S, S[, 1 or 3]) uint8 tight face crop -> (192, 192, 3) uint8 FaceMesh input crop.

    Grayscale input is replicated to 3 channels; colour is kept as given (RGB). The crop is
    padded by ``margin * S`` pixels (rounded) on each side with ``padding`` (``edge``,
    ``constant`` or ``reflect``) and resized with bilinear interpolation (``cv2.INTER_LINEAR``).
    """
    if padding not in PADDINGS:
        raise KeyferError(f"unknown precrop padding {padding!r}; choose from {tuple(PADDINGS)}")
    rgb = _as_rgb_uint8(image)
    size = rgb.shape[0]
    pad = margin_pixels(size, margin)
    if padding == "reflect" and pad >= size:
        raise KeyferError(f"reflect padding needs a margin under one side, got {margin}")
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, PADDINGS[padding], value=(PAD_VALUE,) * 3)
    return cv2.resize(padded, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)


def to_gray3(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) uint8 gray (ITU-R BT.601 luma, rounded) in all channels."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise KeyferError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    luma = np.rint(image.astype(np.float32) @ _LUMA).astype(np.uint8)
    return np.repeat(luma[:, :, None], 3, axis=2)


def gray3_crops(crops: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB crops in [0, 1] -> their BT.601 luma in all three channels (unrounded:
    the tensor form of :func:`to_gray3`, for crops already in the network's range)."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=crops.dtype, device=crops.device)
    return (crops * weights.view(1, 3, 1, 1)).sum(1, keepdim=True).expand(-1, 3, -1, -1)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Square uint8 (S, S), (S, S, 1) or (S, S, 3) -> C-contiguous (S, S, 3)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise KeyferError(
            f"expected a uint8 (S, S[, C]) face crop, got {image.shape} {image.dtype}"
        )
    if image.ndim == 2:
        image = image[:, :, None]
    height, width, channels = image.shape
    if height != width or height == 0 or channels not in (1, 3):
        raise KeyferError(f"expected a square 1- or 3-channel face crop, got shape {image.shape}")
    return np.ascontiguousarray(np.repeat(image, 3, axis=2) if channels == 1 else image)


def prepare_face(
    image: np.ndarray,
    color_mode: str,
    margin: float = DEFAULT_MARGIN,
    padding: str = DEFAULT_PADDING,
) -> np.ndarray:
    """A pre-cropped (S, S, 3) uint8 RGB face -> the (192, 192, 3) uint8 input of a model with
    ``color_mode`` (``gray3``: gray replicated to 3 channels; ``rgb``: as is)."""
    if color_mode == "gray3":
        image = to_gray3(image)
    return precrop_to_facemesh(image, margin, padding)
