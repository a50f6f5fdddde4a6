"""Margin and padding study for pre-cropped FERPlus faces fed to FaceMesh (docs/method.md,
'Pre-cropped faces').

For ``--n`` FERPlus train images (majority labels, sampled with ``--seed``), each margin x padding
(and bilinear vs bicubic resizing with edge padding) is run through FaceMesh. Recorded per setting:

- mean presence and the fraction with presence > 0.5;
- ``inside``: the mean fraction of the 68 iBUG points inside the original 48x48 face region;
- ``jaw_ratio``: the jaw width (iBUG 1 to 17) over the original crop width;
- ``chin_y``: iBUG 9 (chin) height over the crop height (FERPlus crops end near the chin);
- ``nme_vs_pipeline``: the mean point distance, over the inter-ocular distance (iBUG 37-46), to
  the landmarks keyfer's own detector -> alignment -> FaceMesh pipeline finds when the face is
  placed in a mid-gray canvas (the crop MediaPipe itself would choose, rotation included).

Points are mapped back to the original crop with :func:`precrop_transform` (pixel centres at
integer + 0.5). Also draws ~6 faces x the margins (edge padding) with the 68 landmarks.

Usage::

    python studies/2026-11-precrop-margin/precrop_margin_study.py --root FERPLUS_ROOT
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from keyfer.data.ferplus import load_ferplus
from keyfer.faces.facemesh import CROP_SIZE, FaceMesh
from keyfer.faces.ibug68 import ibug68
from keyfer.faces.pipeline import FacePipeline
from keyfer.io.images import read_image
from keyfer.preprocessing import (
    DEFAULT_MARGIN,
    DEFAULT_PADDING,
    PAD_VALUE,
    PADDINGS,
    margin_pixels,
    precrop_to_facemesh,
    precrop_transform,
)

log = logging.getLogger("precrop_margin_study")

REPO = Path(__file__).resolve().parents[2]
MARGINS = (0.0, 0.15, 0.2, 0.25, 0.35)
INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}
JAW_RIGHT, JAW_LEFT, CHIN = 0, 16, 8  # iBUG 1, 17, 9
EYE_RIGHT, EYE_LEFT = 36, 45  # iBUG 37, 46
FIGURE_FACES = 6
TILE = 288  # figure tile side: the 192 crop upscaled 1.5x


@dataclass(frozen=True)
class Row:
    """The measures of one preparation setting over the sample."""

    margin: float
    padding: str
    interpolation: str
    mean_presence: float
    presence_above_half: float
    inside: float
    jaw_ratio: float
    chin_y: float
    nme_vs_pipeline: float


def prepare(face: np.ndarray, margin: float, padding: str, interpolation: str) -> np.ndarray:
    """(48, 48, 3) uint8 face -> (192, 192, 3) uint8; bicubic only for the comparison rows."""
    if interpolation == "linear":
        return precrop_to_facemesh(face, margin, padding)
    pad = margin_pixels(face.shape[0], margin)
    padded = cv2.copyMakeBorder(face, pad, pad, pad, pad, PADDINGS[padding], value=(PAD_VALUE,) * 3)
    return cv2.resize(padded, (CROP_SIZE, CROP_SIZE), interpolation=INTERPOLATIONS[interpolation])


def run_facemesh(model: FaceMesh, crops: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 192, 192, 3) uint8 -> (N, 68, 2) iBUG points in crop pixels and (N,) presence."""
    points, presence = [], []
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            x = torch.from_numpy(crops[start : start + batch]).permute(0, 3, 1, 2).float() / 255
            out = model(x)
            points.append(ibug68(out.mesh)[..., :2].numpy())
            presence.append(out.presence.numpy())
    return np.concatenate(points), np.concatenate(presence)


def pipeline_reference(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, S, 3) faces -> (N, 68, 2) landmarks in source pixels and (N,) final ROI sides in
    source pixels, from the full pipeline run on each face centred in a mid-gray canvas of side
    3 S; NaN where it finds no face."""
    pipeline = FacePipeline(tiling=False)
    size = faces.shape[1]
    found = np.full((len(faces), 68, 2), np.nan)
    sides = np.full(len(faces), np.nan)
    for i, face in enumerate(faces):
        canvas = cv2.copyMakeBorder(face, *(size,) * 4, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
        result = pipeline(canvas)
        if len(result):
            best = int(result.presence.argmax())
            found[i] = result.landmarks68[best].numpy() - size
            sides[i] = float(result.crop_to_image[best, :, 0].norm()) * CROP_SIZE
    return found, sides


def measure(
    points: np.ndarray, presence: np.ndarray, size: int, margin: float, reference: np.ndarray
) -> dict:
    """Measures of one setting; ``points`` (N, 68, 2) in 192-crop pixels, ``reference``
    (N, 68, 2) pipeline landmarks in source pixels (NaN rows are left out of the NME)."""
    scale, offset = precrop_transform(size, margin)
    source = (points - offset) / scale
    inside = ((source >= 0) & (source < size)).all(axis=-1)
    jaw = np.linalg.norm(source[:, JAW_LEFT] - source[:, JAW_RIGHT], axis=-1)
    error = np.linalg.norm(source - reference, axis=-1).mean(axis=-1)
    iod = np.linalg.norm(reference[:, EYE_LEFT] - reference[:, EYE_RIGHT], axis=-1)
    return {
        "mean_presence": float(presence.mean()),
        "presence_above_half": float((presence > 0.5).mean()),
        "inside": float(inside.mean()),
        "jaw_ratio": float(jaw.mean() / size),
        "chin_y": float(source[:, CHIN, 1].mean() / size),
        "nme_vs_pipeline": float(np.nanmean(error / iod)),
    }


def draw_tile(crop: np.ndarray, points: np.ndarray, presence: float, margin: float) -> np.ndarray:
    """One figure tile: the crop upscaled, the original face region boxed, the 68 points drawn."""
    zoom = TILE / CROP_SIZE
    tile = cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_LINEAR)
    scale, offset = precrop_transform(48, margin)
    lo, hi = round(offset * zoom), round((offset + 48 * scale) * zoom) - 1
    cv2.rectangle(tile, (lo, lo), (hi, hi), (90, 160, 255), 1, cv2.LINE_AA)
    for index, (x, y) in enumerate(points * zoom):
        colour = (255, 140, 0) if index <= JAW_LEFT else (0, 230, 90)
        cv2.circle(tile, (round(x * 16), round(y * 16)), 2 * 16, colour, -1, cv2.LINE_AA, shift=4)
    cv2.putText(tile, f"p={presence:.2f}", (6, TILE - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                (255, 255, 0), 1, cv2.LINE_AA)  # fmt: skip
    return tile


def figure(shown: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Grid of faces (rows) x margins (columns) from {margin: (crops, points, presence)}."""
    header_height = 36
    rows = []
    for i in range(FIGURE_FACES):
        tiles = [draw_tile(c[i], p[i], s[i], m) for m, (c, p, s) in shown.items()]
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    header = np.full((header_height, grid.shape[1], 3), 255, np.uint8)
    for column, margin in enumerate(shown):
        label = "direct resize" if margin == 0 else f"margin {margin:.2f}, edge"
        cv2.putText(header, label, (column * TILE + 10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.65,
                    (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    return np.concatenate([header, grid], axis=0)


CHOICE = """\
Choice (default in `keyfer.preprocessing`): margin {margin:.2f} with {padding} padding, bilinear.
Margins 0.15 and 0.20 tie on presence and NME vs pipeline, and the pipeline's own geometry sits
between them (jaw ratio nearer 0.15, chin y nearer 0.20; its final ROI equals a margin of
{roi_margin:.2f}, but centred lower on the face than a symmetric pad). 0.20 is the middle of the
flat region (quality drops fast below 0.15 and slowly above 0.25), and in the overlays 0.15 puts
the jaw slightly inside the face; direct resize puts mouth and jaw points inside it. Edge padding
is at least as good as constant at every margin and reflect is worst; bicubic resizing changes
nothing measurable."""


def markdown(rows: list[Row], command: str, n: int, seed: int, reference: dict) -> str:
    """The results as a Markdown table with the command that made them."""
    lines = [
        "# Pre-cropped FERPlus faces into FaceMesh: margin and padding",
        "",
        f"{n} FERPlus train images (majority labels), sampled with seed {seed}. Margin is the",
        "fraction of the side added on each side before resizing to 192x192. `inside`: mean",
        "fraction of the 68 iBUG points inside the original 48x48 region; `jaw ratio`: jaw width",
        "(iBUG 1-17) / crop width; `chin y`: iBUG 9 height / crop height; `NME vs pipeline`:",
        "mean point distance / inter-ocular distance to the landmarks of keyfer's full detector ->",
        "alignment -> FaceMesh pipeline on the face centred in a mid-gray canvas.",
        "",
        "| margin | padding | resize | mean presence | presence > 0.5 | inside | jaw ratio "
        "| chin y | NME vs pipeline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.margin:.2f} | {r.padding} | {r.interpolation} | {r.mean_presence:.3f} | "
            f"{r.presence_above_half:.1%} | {r.inside:.3f} | {r.jaw_ratio:.3f} | {r.chin_y:.3f} | "
            f"{r.nme_vs_pipeline:.3f} |"
        )
    lines += [
        "",
        f"Pipeline reference (found {reference['found']} of {n}): jaw ratio "
        f"{reference['jaw_ratio']:.3f}, chin y {reference['chin_y']:.3f}; median final ROI side "
        f"equivalent to margin {reference['roi_margin']:.3f}.",
        "",
        CHOICE.format(
            margin=DEFAULT_MARGIN, padding=DEFAULT_PADDING, roi_margin=reference["roi_margin"]
        ),
    ]
    lines += ["", "Overlays: `docs/precrop_margin.png`.", "", "Command:", "", "```",
              command, "```", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the FERPlus root")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=REPO / "docs/results/precrop_margin.json")
    parser.add_argument("--markdown", type=Path, default=REPO / "docs/results/precrop_margin.md")
    parser.add_argument("--figure", type=Path, default=REPO / "docs/precrop_margin.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    samples = load_ferplus(args.root, "train").samples
    picked = sorted(np.random.default_rng(args.seed).choice(len(samples), args.n, replace=False))
    faces = np.stack([read_image(samples[i].path) for i in picked])
    size = faces.shape[1]
    model = FaceMesh.from_pretrained()
    reference, roi_sides = pipeline_reference(faces)
    found = np.isfinite(reference[:, 0, 0])
    reference_summary = {
        "found": int(found.sum()),
        "jaw_ratio": float(
            np.linalg.norm(reference[found, JAW_LEFT] - reference[found, JAW_RIGHT], axis=-1).mean()
            / size
        ),
        "chin_y": float(reference[found, CHIN, 1].mean() / size),
        "roi_margin": float((np.nanmedian(roi_sides) / size - 1) / 2),
    }
    log.info("pipeline reference: %s", reference_summary)

    settings = [(m, p, "linear") for m in MARGINS for p in PADDINGS]
    settings += [(m, "edge", "cubic") for m in MARGINS]
    rows, shown = [], {}
    for margin, padding, interpolation in settings:
        crops = np.stack([prepare(f, margin, padding, interpolation) for f in faces])
        points, presence = run_facemesh(model, crops, args.batch)
        rows.append(
            Row(
                margin, padding, interpolation, **measure(points, presence, size, margin, reference)
            )
        )
        log.info("%s", rows[-1])
        if padding == "edge" and interpolation == "linear":
            shown[margin] = (crops[:FIGURE_FACES], points[:FIGURE_FACES], presence[:FIGURE_FACES])

    command = shlex.join(
        ["python", "studies/2026-11-precrop-margin/precrop_margin_study.py", *sys.argv[1:]]
    )
    result = {
        "command": command,
        "n": args.n,
        "seed": args.seed,
        "images": [samples[i].path.name for i in picked],
        "pipeline_reference": reference_summary,
        "default": {"margin": DEFAULT_MARGIN, "padding": DEFAULT_PADDING},
        "rows": [asdict(r) for r in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    args.markdown.write_text(markdown(rows, command, args.n, args.seed, reference_summary))
    cv2.imwrite(str(args.figure), cv2.cvtColor(figure(shown), cv2.COLOR_RGB2BGR))
    log.info("wrote %s, %s and %s", args.json, args.markdown, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
