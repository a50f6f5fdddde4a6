"""Sanity check of the dlib ResNet port on AFW: do two augmented copies of a face find each other?

    python studies/2026-11-dlib-afw-identity/dlib_afw_identity.py --afw AFW_DIR \\
        --out docs/results/dlib_afw_identity.json

Each of the 337 annotated AFW faces is cut into a 150x150 chip by dlib's alignment
(:mod:`keyfer.faces.dlib_align`, from the ground-truth 68 points). Two copies are made with
independent mild augmentations (a similarity about the chip centre: rotation within +-5 degrees,
scale within +-5%, shift within +-4 chip pixels; brightness times 0.8..1.2). A face passes when
the Euclidean distance between its two copies' descriptors (shipped fp16 weights) is smaller than
the distance from either copy to either copy of every face from another photo (AFW's ``X_1``,
``X_2`` files are faces of one photo and are not compared with each other).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from keyfer.faces.dlib_align import chip_transform, extract_chip
from keyfer.faces.dlib_resnet import CHIP_SIZE, DlibResNet
from keyfer.io.images import read_image
from keyfer.landmark_eval import read_annotations

SCRIPT = "studies/2026-11-dlib-afw-identity/dlib_afw_identity.py"
MAX_ANGLE_DEG, MAX_SCALE, MAX_SHIFT, BRIGHTNESS = 5.0, 0.05, 4.0, (0.8, 1.2)
DLIB_SAME_PERSON = 0.6  # dlib's documented same-person threshold


def augmented_chip(image: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A (150, 150, 3) uint8 chip of the face at ``points`` (68, 2), mildly perturbed."""
    angle = np.deg2rad(rng.uniform(-MAX_ANGLE_DEG, MAX_ANGLE_DEG))
    scale = rng.uniform(1 - MAX_SCALE, 1 + MAX_SCALE)
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]])
    centre = np.full(2, CHIP_SIZE / 2)
    shift = centre - linear @ centre + rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
    perturb = np.vstack([np.column_stack([linear, shift]), [0, 0, 1]])
    chip = extract_chip(image, chip_transform(points) @ perturb)
    return np.clip(chip * rng.uniform(*BRIGHTNESS), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--afw", type=Path, required=True, help="the AFW folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    faces = read_annotations(args.afw)
    copies = []
    for face in faces:
        image = read_image(args.afw / face.name)
        copies.append([augmented_chip(image, face.points, rng) for _ in range(2)])
    chips = torch.from_numpy(np.array(copies)).flatten(0, 1).permute(0, 3, 1, 2)
    model = DlibResNet.from_pretrained()
    with torch.no_grad():
        emb = torch.cat([model(batch).embedding for batch in chips.split(64)]).view(-1, 2, 128)
    a, b = emb[:, 0], emb[:, 1]
    same = (a - b).norm(dim=1)
    cross = torch.stack([torch.cdist(x, y) for x in (a, b) for y in (a, b)]).amin(0)
    photos = np.array([face.photo for face in faces])
    other = torch.from_numpy(photos[:, None] != photos[None, :])
    nearest_other = cross.masked_fill(~other, float("inf")).amin(1)
    passed = same < nearest_other
    result = {
        "command": " ".join(["python", SCRIPT, *sys.argv[1:]]),
        "faces": len(faces),
        "photos": len(set(photos)),
        "passed": int(passed.sum()),
        "fraction_passed": float(passed.float().mean()),
        "failures": [faces[i].name for i in np.flatnonzero(~passed.numpy())],
        "same_face_distance": {"mean": float(same.mean()), "max": float(same.max())},
        "nearest_other_face_distance": {
            "mean": float(nearest_other.mean()),
            "min": float(nearest_other.min()),
        },
        "same_face_below_0.6": float((same < DLIB_SAME_PERSON).float().mean()),
        "other_pairs_below_0.6": float((cross[other] < DLIB_SAME_PERSON).float().mean()),
        "augmentation": {
            "rotation_deg": MAX_ANGLE_DEG, "scale": MAX_SCALE, "shift_px": MAX_SHIFT,
            "brightness": BRIGHTNESS, "seed": args.seed,
        },
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
