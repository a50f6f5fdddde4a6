"""Draw the mesh -> iBUG-68 mapping on the example image: docs/ibug68_mapping.png.

Usage::

    python -m tools.ibug68_figure [--image examples/astronaut.png] [--out docs/ibug68_mapping.png]

The face is cropped with a margin and enlarged; all 468 mesh vertices are small grey dots, the 68
iBUG points are coloured by part and labelled with their 1-based numbers, and the nasal base
(iBUG 34) is drawn in red. keyfer's coordinates put pixel centres at integer + 0.5; Pillow draws at
integer centres, hence the 0.5 shift in :func:`to_canvas`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from keyfer.faces.ibug68 import NASAL_BASE
from keyfer.faces.pipeline import FacePipeline
from keyfer.io.images import read_image

log = logging.getLogger("ibug68_figure")

# 0-based index ranges of the parts and their colours.
PARTS = {
    "jaw": (range(0, 17), (255, 200, 0)),
    "brows": (range(17, 27), (0, 220, 255)),
    "nose": (range(27, 36), (80, 255, 80)),
    "eyes": (range(36, 48), (255, 120, 255)),
    "outer lip": (range(48, 60), (255, 160, 60)),
    "inner lip": (range(60, 68), (140, 200, 255)),
}
NASAL_COLOUR = (255, 30, 30)
# Labels prefer to sit away from these centres: eye and mouth labels spread around their own
# part, the others away from the face centre.
LOCAL_CENTRE_GROUPS = (range(36, 42), range(42, 48), range(48, 68))
LABEL_DISTANCES = (8.0, 12.0, 17.0, 24.0, 32.0)  # canvas pixels from the point to the label centre
LABEL_ANGLES = np.deg2rad(np.arange(0, 360, 15))


def to_canvas(points: np.ndarray, origin: np.ndarray, scale: float) -> np.ndarray:
    """(..., 2) image pixels (centres at +0.5) -> canvas coordinates for Pillow (centres at 0)."""
    return (points - origin) * scale - 0.5


def preferred_directions(p68: np.ndarray) -> np.ndarray:
    """(68, 2) points -> (68, 2) unit vectors pointing away from each point's part centre."""
    centres = np.repeat(p68.mean(0, keepdims=True), 68, axis=0)
    for group in LOCAL_CENTRE_GROUPS:
        idx = list(group)
        centres[idx] = p68[idx].mean(0)
    d = p68 - centres
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)


def place_labels(pts: np.ndarray, sizes: list[tuple[float, float]]) -> np.ndarray:
    """Greedy label placement: (68, 2) canvas points -> (68, 2) label centres.

    Each label takes the candidate position (a ring of angles and distances around its point)
    that overlaps no placed label and covers no other point, preferring short distances and the
    direction away from the point's part centre. Crowded points are placed first.
    """
    preferred = preferred_directions(pts)
    crowding = (np.linalg.norm(pts[:, None] - pts[None], axis=-1) < 20).sum(1)
    placed: list[np.ndarray] = []  # label rectangles x0, y0, x1, y1
    centres = np.zeros_like(pts)
    for i in np.argsort(-crowding, kind="stable"):
        w, h = sizes[i]
        best, best_cost = None, np.inf
        for dist in LABEL_DISTANCES:
            for angle in LABEL_ANGLES:
                direction = np.array([np.cos(angle), np.sin(angle)])
                c = pts[i] + direction * dist
                rect = np.array([c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2])
                cost = dist + 6 * (1 - direction @ preferred[i])
                cost += 50 * sum(_overlap(rect, r) for r in placed)
                inside = _covers(rect, np.delete(pts, i, axis=0), margin=3)
                cost += 40 * inside + 40 * _covers(rect, pts[i : i + 1], margin=2)
                if cost < best_cost:
                    best, best_cost = (c, rect), cost
        centres[i] = best[0]
        placed.append(best[1])
    return centres


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def _covers(rect: np.ndarray, points: np.ndarray, margin: float) -> int:
    x0, y0, x1, y1 = rect[0] - margin, rect[1] - margin, rect[2] + margin, rect[3] + margin
    return int(((points[:, 0] > x0) & (points[:, 0] < x1) & (points[:, 1] > y0)
                & (points[:, 1] < y1)).sum())  # fmt: skip


def draw_figure(image: np.ndarray, mesh: np.ndarray, p68: np.ndarray, scale: float) -> Image.Image:
    """Crop the face (mesh bounding box + 20 % margin), enlarge it and draw mesh and labels."""
    lo, hi = mesh[:, :2].min(0), mesh[:, :2].max(0)
    margin = 0.2 * (hi - lo)
    x0, y0 = np.maximum(np.floor(lo - margin), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(hi + margin), image.shape[1::-1]).astype(int)
    crop = image[y0:y1, x0:x1]
    big = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    canvas = Image.fromarray((big * 0.7).astype(np.uint8))  # darkened so the labels stand out
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=11)
    origin = np.array([x0, y0], float)

    for x, y in to_canvas(mesh[:, :2], origin, scale):
        draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=(170, 170, 170))
    pts = to_canvas(p68, origin, scale)
    colours = [NASAL_COLOUR] * 68
    for indices, colour in PARTS.values():
        for i in indices:
            colours[i] = NASAL_COLOUR if i == NASAL_BASE else colour
    sizes = []
    for i in range(68):
        bx0, by0, bx1, by1 = draw.textbbox((0, 0), str(i + 1), font=font, stroke_width=1)
        sizes.append((bx1 - bx0, by1 - by0))
    labels = place_labels(pts, sizes)
    for i in range(68):
        if np.linalg.norm(labels[i] - pts[i]) > LABEL_DISTANCES[1]:
            draw.line([tuple(pts[i]), tuple(labels[i])], fill=colours[i], width=1)
    for i in range(68):
        r = 4 if i == NASAL_BASE else 2.5
        x, y = pts[i]
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colours[i], outline=(0, 0, 0))
    for i in range(68):
        draw.text(tuple(labels[i]), str(i + 1), fill=colours[i], font=font, anchor="mm",
                  stroke_width=1, stroke_fill=(0, 0, 0))  # fmt: skip
    draw.text((6, canvas.height - 6), "red: nasal base (iBUG 34)", fill=NASAL_COLOUR, font=font,
              anchor="ld", stroke_width=1, stroke_fill=(0, 0, 0))  # fmt: skip
    return canvas


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image", type=Path, default=Path("examples/astronaut.png"))
    p.add_argument("--out", type=Path, default=Path("docs/ibug68_mapping.png"))
    p.add_argument("--scale", type=float, default=3.0, help="enlargement of the face crop")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    image = read_image(args.image)
    faces = FacePipeline()(image)
    if len(faces) == 0:
        sys.exit(f"error: no face found in {args.image}")
    best = int(faces.scores.argmax())
    figure = draw_figure(
        image, faces.mesh[best].numpy(), faces.landmarks68[best].numpy(), args.scale
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out)
    log.info("wrote %s (%dx%d)", args.out, *figure.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
