"""Preview the image engine's augmentation: a grid of augmented versions of one face.

Usage::

    python -m tools.augment_preview IMAGE --out grid.png [--preset domain|default]
        [--faces auto|detect|precropped] [--rows 4] [--cols 6] [--tile 128] [--seed 0]

The face's 192x192 RGB input crop is made as training makes it for a sample of that ``faces``
mode (:func:`keyfer.data.crops.sample_crop`, the default pre-crop margin and padding), then
augmented as the image engine does (the ranges rescaled from the tight face to the crop). The
first tile is the crop unaugmented; each tile is shown at ``--tile`` pixels.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from keyfer.data.augment import DOMAIN_AUGMENT, AugmentConfig, augment_face
from keyfer.data.crops import sample_crop
from keyfer.data.labels import FACES_MODES, Sample, one_hot
from keyfer.errors import KeyferError
from keyfer.preprocessing import DEFAULT_MARGIN, DEFAULT_PADDING
from keyfer.train.images import augment_for_crop

log = logging.getLogger("augment_preview")

PRESETS = {"default": {}, "domain": DOMAIN_AUGMENT}


def preview_grid(
    crop: np.ndarray, config: AugmentConfig, rows: int, cols: int, tile: int, seed: int
) -> np.ndarray:
    """A (rows * tile, cols * tile, 3) uint8 grid: the (192, 192, 3) uint8 ``crop``, then
    ``rows * cols - 1`` augmentations of it drawn from one generator seeded with ``seed``,
    row by row, each resized to ``tile`` pixels (area-averaged)."""
    rng = np.random.default_rng(seed)
    tiles = [crop] + [augment_face(crop, rng, config) for _ in range(rows * cols - 1)]
    small = [cv2.resize(t, (tile, tile), interpolation=cv2.INTER_AREA) for t in tiles]
    return np.vstack([np.hstack(small[r * cols : (r + 1) * cols]) for r in range(rows)])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("image", type=Path, help="a photo or a face crop")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--preset", choices=sorted(PRESETS), default="domain")
    p.add_argument("--faces", choices=FACES_MODES, default="auto", help="how to find the face")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=6)
    p.add_argument("--tile", type=int, default=128, help="side of a tile in pixels")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if min(args.rows, args.cols, args.tile) < 1:
        p.error("--rows, --cols and --tile must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    sample = Sample(args.image, 0, one_hot(0), faces=args.faces)
    try:
        crop = sample_crop(sample, "rgb", DEFAULT_MARGIN, DEFAULT_PADDING)
    except KeyferError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    config = augment_for_crop(AugmentConfig(**PRESETS[args.preset]), DEFAULT_MARGIN)
    grid = preview_grid(crop, config, args.rows, args.cols, args.tile, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.out, optimize=True)
    log.info("wrote %s (%dx%d, preset %s)", args.out, grid.shape[1], grid.shape[0], args.preset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
