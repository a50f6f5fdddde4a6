"""How closely two ``keyfer predict --json`` runs over the same inputs agree (for example the
torch and onnx backends): faces matched per image by box IoU, then label agreement and the
largest differences in probabilities and box coordinates.

    keyfer predict AFW_DIR --json torch.json
    keyfer predict AFW_DIR --backend onnx --json onnx.json
    python -m tools.compare_predictions torch.json onnx.json \\
        --out docs/results/onnx_agreement.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from keyfer.geometry import box_iou

MATCH_IOU = 0.5


def compare(first: dict, second: dict) -> dict:
    """Agreement figures of two predict outputs (their ``records`` lists, in the same order)."""
    faces = matched = same_label = 0
    probability_diffs, box_diffs = [], []
    for a, b in zip(first["records"], second["records"], strict=True):
        if a["path"] != b["path"]:
            raise ValueError(f"the runs differ in their inputs: {a['path']} against {b['path']}")
        faces += max(len(a["faces"]), len(b["faces"]))
        if not a["faces"] or not b["faces"]:
            continue
        boxes_b = torch.tensor([f["box"] for f in b["faces"]])
        for face in a["faces"]:
            iou = box_iou(boxes_b, torch.tensor([face["box"]]))[:, 0]
            if iou.max() < MATCH_IOU:
                continue
            other = b["faces"][int(iou.argmax())]
            matched += 1
            same_label += face["expression"]["label"] == other["expression"]["label"]
            p, q = face["expression"]["probabilities"], other["expression"]["probabilities"]
            probability_diffs.append(max(abs(p[c] - q[c]) for c in p))
            box_diffs.append(float(np.abs(np.subtract(face["box"], other["box"])).max()))
    return {
        "images": len(first["records"]),
        "faces_in_either": faces,
        "faces_matched": matched,
        "same_label": same_label,
        "label_agreement": round(same_label / max(matched, 1), 4),
        "probability_max_abs_diff": max(probability_diffs, default=0.0),
        "probability_mean_of_max_abs_diff": float(np.mean(probability_diffs or [0.0])),
        "box_max_abs_diff_px": max(box_diffs, default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    first, second = (json.loads(p.read_text()) for p in (args.first, args.second))
    result = {"first": str(args.first), "second": str(args.second), **compare(first, second)}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
