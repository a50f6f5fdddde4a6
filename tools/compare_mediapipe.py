"""How closely keyfer's mesh agrees with MediaPipe's own pipeline on the same images.

    keyfer landmarks DIR --json OURS.json
    python -m tools.compare_mediapipe OURS.json \
        docs/results/mediapipe_reference/mediapipe_facemesh_afw.json.xz --out RESULT.json

Each MediaPipe face is matched to the keyfer face whose mesh centre is nearest (within 10% of
the face width); the distance is the mean 2-D distance over the 468 points, in pixels.
keyfer's coordinates put pixel centres at +0.5, MediaPipe's at +0.5 too (x = norm_x * W).
"""

import argparse
import json
import lzma
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ours", type=Path)
    parser.add_argument("mediapipe", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    opener = lzma.open if args.mediapipe.suffix == ".xz" else open
    with opener(args.mediapipe, "rt") as handle:
        theirs = json.load(handle)["images"]
    ours = {Path(r["path"]).name: r for r in json.loads(args.ours.read_text())["records"]}
    distances, unmatched = [], 0
    for name, image in theirs.items():
        if name not in ours:
            continue
        meshes = [np.array(f["mesh"])[:, :2] for f in ours[name]["faces"]]
        for face in image["faces"]:
            reference = np.array(face["mesh"])[:, :2]
            width = np.ptp(reference[:, 0])
            gaps = [np.linalg.norm(m.mean(0) - reference.mean(0)) for m in meshes]
            if not gaps or min(gaps) > 0.1 * width:
                unmatched += 1
                continue
            mesh = meshes[int(np.argmin(gaps))]
            distances.append(float(np.linalg.norm(mesh - reference, axis=1).mean()))
    d = np.array(distances)
    result = {
        "faces_compared": len(d), "mediapipe_faces_unmatched": unmatched,
        "mean_px": float(d.mean()), "median_px": float(np.median(d)),
        "p90_px": float(np.percentile(d, 90)), "max_px": float(d.max()),
        "share_within_1px": float((d < 1).mean()),
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
