"""Training augmentation of face crops (docs/method.md, 'Training'; docs/training.md,
'Augmentation'). The image engine applies it to the prepared 192x192 crop, before FaceMesh, so
FaceMesh sees the occlusion too and predicts its landmarks on the augmented face
(``keyfer.train.images.augment_for_crop`` rescales the ranges from the tight face to the crop).

The ops run in the order a photo is made: the scene (flip and a small affine: crop jitter and
rotation), its lighting (gamma, brightness and contrast, colour temperature, an illumination
ramp), a gray source, an occluder (random erasing), then the capture (Gaussian and motion blur,
down- and up-sampling, JPEG). The domain ops (everything but flip, affine, brightness, contrast
and erasing) happen with probabilities that default to 0 and draw nothing from the generator
then, so the default config augments exactly as before they existed; :data:`DOMAIN_AUGMENT`
turns them on for training that must hold up on colour photos, film stills and studio portraits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np

from keyfer.errors import KeyferError
from keyfer.preprocessing import to_gray3


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges: ``rotation`` degrees, ``scale`` and ``shift`` (fraction of the side) of the
    affine; ``brightness`` and ``contrast`` multiplicative jitter; ``erase_prob`` of erasing one
    rectangle covering ``erase_area`` of the image.

    Domain ops, each applied with its ``*_prob`` (0: off) and drawn uniformly from its range
    (pixel sizes are on the augmented crop): ``gamma`` exponent (log-uniform; > 1 darkens);
    ``color``: red against blue gain ``1 +- color_temperature`` times independent channel gains
    ``1 +- channel_gain``; ``gradient``: brightness times a linear ramp from ``1 - g`` to
    ``1 + g`` across the crop in a random direction, g up to ``gradient``; ``gray``: BT.601 gray
    in all three channels; ``blur_sigma`` of a Gaussian blur; ``motion_blur_length`` pixels of a
    line kernel at a random angle; ``downsample_side``: resized to that side (area-averaged) and
    back (nearest, linear or cubic, at random); ``jpeg_quality`` of a JPEG round trip.
    """

    flip: bool = True
    rotation: float = 10.0
    scale: float = 0.1
    shift: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2
    erase_prob: float = 0.25
    erase_area: tuple[float, float] = (0.02, 0.15)
    gamma_prob: float = 0.0
    gamma: tuple[float, float] = (0.6, 1.7)
    color_prob: float = 0.0
    color_temperature: float = 0.15
    channel_gain: float = 0.05
    gradient_prob: float = 0.0
    gradient: float = 0.4
    gray_prob: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 2.0)
    motion_blur_prob: float = 0.0
    motion_blur_length: tuple[int, int] = (3, 9)
    downsample_prob: float = 0.0
    downsample_side: tuple[int, int] = (24, 96)
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (20, 80)

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_prob") and not 0 <= value <= 1:
                raise KeyferError(f"bad augmentation: {item.name} must be in [0, 1], got {value}")
            if isinstance(value, tuple) and not 0 < value[0] <= value[1]:
                raise KeyferError(
                    f"bad augmentation: {item.name} must be a range 0 < low <= high, got {value}"
                )
        if self.jpeg_quality[1] > 100 or self.erase_area[1] > 1 or not 0 <= self.gradient <= 1:
            raise KeyferError(
                "bad augmentation: jpeg_quality must lie in [1, 100], erase_area in (0, 1] and "
                "gradient in [0, 1]"
            )


DOMAIN_AUGMENT: dict[str, Any] = {
    "gamma_prob": 0.3,
    "color_prob": 0.3,
    "gradient_prob": 0.3,
    "gray_prob": 0.3,
    "blur_prob": 0.25,
    "motion_blur_prob": 0.2,
    "downsample_prob": 0.4,
    "jpeg_prob": 0.4,
}
"""Overrides of :class:`AugmentConfig` for domain-robust training (``train.images.augment`` in a
config): every domain op on, at its default range, for crops unlike FERPlus's gray web faces."""

_UPSAMPLING = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


def augment_face(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """A randomly augmented copy of an (S, S, 3) uint8 RGB face crop, same shape and dtype."""
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
    image = _lighting(image, rng, config)
    if _happens(rng, config.gray_prob):
        image = to_gray3(image)
    if rng.random() < config.erase_prob:
        area = rng.uniform(*config.erase_area) * size * size
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        h = int(min(size, round(np.sqrt(area * aspect))))
        w = int(min(size, round(np.sqrt(area / aspect))))
        y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        image[y : y + h, x : x + w] = rng.integers(0, 256)
    return _capture(image, rng, config)


def _happens(rng: np.random.Generator, prob: float) -> bool:
    """Whether an op with probability ``prob`` runs; draws from ``rng`` only when ``prob > 0``."""
    return prob > 0 and rng.random() < prob


def _lighting(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Gamma, brightness and contrast, colour gains and an illumination ramp on an (S, S, 3) uint8
    crop; the ramp's pixel coordinates are pixel centres (integer + 0.5) over the side, in
    [-1, 1]."""
    if _happens(rng, config.gamma_prob):
        gamma = np.exp(rng.uniform(*np.log(config.gamma)))
        table = np.rint(255 * (np.arange(256) / 255) ** gamma).astype(np.uint8)
        image = cv2.LUT(image, table)
    gain = 1 + rng.uniform(-config.brightness, config.brightness)
    contrast = 1 + rng.uniform(-config.contrast, config.contrast)
    pixels = image.astype(np.float32)
    mean = pixels.mean()
    pixels = (pixels - mean) * contrast + mean * gain
    if _happens(rng, config.color_prob):
        warm = rng.uniform(-config.color_temperature, config.color_temperature)
        jitter = 1 + rng.uniform(-config.channel_gain, config.channel_gain, 3)
        pixels *= (np.array([1 + warm, 1, 1 - warm]) * jitter).astype(np.float32)
    if _happens(rng, config.gradient_prob):
        strength = rng.uniform(0, config.gradient)
        direction = rng.uniform(0, 2 * np.pi)
        dx, dy = float(np.cos(direction)), float(np.sin(direction))
        side = image.shape[0]
        centres = (np.arange(side, dtype=np.float32) + 0.5) / side * 2 - 1
        ramp = (dx * centres[None, :] + dy * centres[:, None]) / (abs(dx) + abs(dy))
        pixels *= (1 + strength * ramp)[:, :, None]
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _capture(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Blur, motion blur, down- and up-sampling and a JPEG round trip of an (S, S, 3) uint8 RGB
    crop, each with its probability."""
    size = image.shape[0]
    if _happens(rng, config.blur_prob):
        sigma = rng.uniform(*config.blur_sigma)
        image = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    if _happens(rng, config.motion_blur_prob):
        kernel = _line_kernel(int(rng.integers(*config.motion_blur_length, endpoint=True)), rng)
        image = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    if _happens(rng, config.downsample_prob):
        side = int(rng.integers(*config.downsample_side, endpoint=True))
        small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        upsampling = _UPSAMPLING[int(rng.integers(len(_UPSAMPLING)))]
        image = cv2.resize(small, (size, size), interpolation=upsampling)
    if _happens(rng, config.jpeg_prob):
        quality = int(rng.integers(*config.jpeg_quality, endpoint=True))
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        _, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        assert decoded is not None  # cv2's own JPEG bytes decode
        image = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return image


def _line_kernel(length: int, rng: np.random.Generator) -> np.ndarray:
    """A (length, length) float32 motion-blur kernel summing to 1: the pixels a line of
    ``length`` pixels through the centre, at a random angle, passes through."""
    angle = rng.uniform(0, np.pi)
    steps = np.linspace(-(length - 1) / 2, (length - 1) / 2, 2 * length)
    centre = (length - 1) / 2
    kernel = np.zeros((length, length), dtype=np.float32)
    kernel[
        np.rint(centre + steps * np.sin(angle)).astype(int),
        np.rint(centre + steps * np.cos(angle)).astype(int),
    ] = 1
    return kernel / kernel.sum()
