"""Training augmentation of face crops (docs/method.md, 'Training'): horizontal flip, a small
affine, colour jitter and random erasing. The image engine applies it to the prepared 192x192
crop, before FaceMesh, so FaceMesh sees the occlusion too and predicts its landmarks on the
augmented face (``keyfer.train.images.augment_for_crop`` rescales the ranges from the tight face
to the crop)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges: ``rotation`` degrees, ``scale`` and ``shift`` (fraction of the side) of the
    affine; ``brightness`` and ``contrast`` multiplicative jitter; ``erase_prob`` of erasing one
    rectangle covering ``erase_area`` of the image."""

    flip: bool = True
    rotation: float = 10.0
    scale: float = 0.1
    shift: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2
    erase_prob: float = 0.25
    erase_area: tuple[float, float] = (0.02, 0.15)


def augment_face(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """A randomly augmented copy of an (S, S, 3) uint8 face crop, same shape."""
    size = image.shape[0]
    if config.flip and rng.random() < 0.5:
        image = image[:, ::-1]
    angle = rng.uniform(-config.rotation, config.rotation)
    scale = 1 + rng.uniform(-config.scale, config.scale)
    matrix = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, scale)
    matrix[:, 2] += rng.uniform(-config.shift, config.shift, 2) * size
    image = cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    gain = 1 + rng.uniform(-config.brightness, config.brightness)
    contrast = 1 + rng.uniform(-config.contrast, config.contrast)
    pixels = image.astype(np.float32)
    mean = pixels.mean()
    image = np.clip((pixels - mean) * contrast + mean * gain, 0, 255).astype(np.uint8)
    if rng.random() < config.erase_prob:
        area = rng.uniform(*config.erase_area) * size * size
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        h = int(min(size, round(np.sqrt(area * aspect))))
        w = int(min(size, round(np.sqrt(area / aspect))))
        y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        image[y : y + h, x : x + w] = rng.integers(0, 256)
    return image
