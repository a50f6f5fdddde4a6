"""Check keyfer's DlibResNet against dlib itself on real 150x150 face chips.

    python3 -m venv dlibenv && dlibenv/bin/pip install dlib-bin numpy pillow
    .venv/bin/python -m tools.compare_dlib --dlib-python dlibenv/bin/python --afw AFW_DIR \
        --out docs/results/dlib_port.json --golden tests/data/dlib_golden.json

dlib runs in its own virtual environment (never a keyfer dependency): this script calls that
environment's Python on itself with ``--worker``, handing chips and landmarks over in .npz files.

Chips: the example image's face (68 points from keyfer's FacePipeline) and the first AFW faces
(ground-truth 68 points), cut by :mod:`keyfer.faces.dlib_align`. The same uint8 chips go to
``dlib.face_recognition_model_v1.compute_face_descriptor(chip)`` and to DlibResNet with fp32
weights converted from the .dat and with the shipped fp16 weights. A second check compares our
chips with ``dlib.get_face_chip`` on the same points (pixels, and dlib's descriptors of both).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "astronaut.png"
N_GOLDEN = 16


def worker(dat: Path, inputs: Path, output: Path) -> None:
    """dlib side (runs in the dlib venv): descriptors of the chips, and dlib's own chips of the
    images at the given points (dlib's frame, integer points as its shape predictor gives)."""
    import dlib

    data = np.load(inputs)
    net = dlib.face_recognition_model_v1(str(dat))
    chips = list(data["chips"])
    plain = np.array([net.compute_face_descriptor(chip) for chip in chips])
    jitter1 = np.array([net.compute_face_descriptor(chip, 1) for chip in chips])
    own_chips = []
    for i, points in enumerate(data["points"]):
        parts = dlib.points([dlib.point(int(x), int(y)) for x, y in points])
        box = dlib.rectangle(*map(int, [*points.min(0), *points.max(0)]))
        shape = dlib.full_object_detection(box, parts)
        own_chips.append(dlib.get_face_chip(data[f"image_{i}"], shape, size=150, padding=0.25))
    np.savez(
        output, plain=plain, jitter1=jitter1, own_chips=np.array(own_chips),
        version=np.array(dlib.__version__),
    )  # fmt: skip


def faces(afw: Path, n_afw: int) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(image paths, RGB images, (68, 2) points in keyfer's pixel frame): the example image's
    face from keyfer's pipeline, then the first ``n_afw`` faces' ground truth of folder ``afw``."""
    from keyfer.faces.pipeline import FacePipeline
    from keyfer.io.images import read_image
    from keyfer.landmark_eval import read_annotations

    astronaut = read_image(EXAMPLE)
    located = FacePipeline()(astronaut)
    golden_points = np.round(located.landmarks68[0].double().numpy(), 4)  # as stored in golden
    paths, images, landmarks = [str(EXAMPLE)], [astronaut], [golden_points]
    for face in read_annotations(afw)[:n_afw]:
        paths.append(str(afw / face.name))
        images.append(read_image(afw / face.name))
        landmarks.append(face.points)
    return paths, images, landmarks


def cut_chips(images: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
    """(N, 150, 150, 3) uint8 chips by keyfer's dlib alignment."""
    from keyfer.faces.dlib_align import chip_transform, extract_chip

    pairs = zip(images, landmarks, strict=True)
    return np.stack([extract_chip(image, chip_transform(points)) for image, points in pairs])


def embed(chips: np.ndarray, state: dict | None) -> np.ndarray:
    """Our (N, 128) descriptors of (N, 150, 150, 3) chips, with ``state`` or the shipped fp16."""
    import torch

    from keyfer.faces.dlib_resnet import DlibResNet

    model = DlibResNet.from_pretrained()
    if state is not None:
        model.load_state_dict(state)
    with torch.no_grad():
        return model(torch.from_numpy(chips).permute(0, 3, 1, 2)).embedding.double().numpy()


def _diffs(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    gap = np.abs(ours - theirs)
    return {
        "max_abs": float(gap.max()), "mean_abs": float(gap.mean()),
        "max_euclidean": float(np.linalg.norm(ours - theirs, axis=1).max()),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dlib-python", type=Path, help="Python of a venv with dlib-bin")
    parser.add_argument("--afw", type=Path, help="the AFW folder (images and .pts files)")
    parser.add_argument("--n-afw", type=int, default=24)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--golden", type=Path, help="write the example chip's golden file here")
    parser.add_argument("--worker", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if args.dlib_python is None or args.afw is None:
        parser.error("--dlib-python and --afw are required")
    import torch

    from tools import convert_dlib

    paths, images, landmarks = faces(args.afw, args.n_afw)
    chips = cut_chips(images, landmarks)
    # dlib's shape predictor gives integer points in its frame (pixel centres at integers).
    points = [np.round(p - 0.5) for p in landmarks]
    rounded_chips = cut_chips(images, [p + 0.5 for p in points])
    dat = convert_dlib.dat_bytes(ROOT / ".cache" / "dlib")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "model.dat").write_bytes(dat)
        arrays = {f"image_{i}": image for i, image in enumerate(images)}
        np.savez(tmp / "in.npz", chips=chips, points=np.stack(points), **arrays)
        command = [str(args.dlib_python), __file__, "--worker", *(str(tmp / f) for f in
                   ("model.dat", "in.npz", "out.npz"))]  # fmt: skip
        subprocess.run(command, check=True)
        theirs = dict(np.load(tmp / "out.npz"))
    fp32_state = convert_dlib.convert(dat, torch.float32)
    fp32 = embed(chips, fp32_state)
    own_embeddings = embed(theirs["own_chips"], fp32_state) - embed(rounded_chips, fp32_state)
    own_distance = np.linalg.norm(own_embeddings, axis=1)
    fp16 = embed(chips, None)
    own_gap = np.abs(theirs["own_chips"].astype(int) - rounded_chips.astype(int))
    result = {
        "command": " ".join(["python", "-m", "tools.compare_dlib", *sys.argv[1:]]),
        "dlib_version": str(theirs["version"]),
        "chips": len(chips),
        "sources": [Path(p).name for p in paths],
        "descriptor_norm_dlib": {
            "min": float(np.linalg.norm(theirs["plain"], axis=1).min()),
            "max": float(np.linalg.norm(theirs["plain"], axis=1).max()),
        },
        "fp32_vs_dlib": _diffs(fp32, theirs["plain"]),
        "fp16_shipped_vs_dlib": _diffs(fp16, theirs["plain"]),
        "dlib_num_jitters_1_equals_0": bool(np.array_equal(theirs["jitter1"], theirs["plain"])),
        "alignment_vs_dlib_get_face_chip": {
            "faces": len(chips),
            "mean_abs_pixel": float(own_gap.mean()),
            "share_pixels_within_8": float((own_gap <= 8).mean()),
            "descriptor_distance_mean": float(own_distance.mean()),
            "descriptor_distance_max": float(own_distance.max()),
        },
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.golden:
        golden = {
            "made_by": "python -m tools.compare_dlib --golden (dlib "
            f"{result['dlib_version']}, compute_face_descriptor on the chip)",
            "landmarks68": np.round(landmarks[0], 4).tolist(),
            "embedding_head": theirs["plain"][0, :N_GOLDEN].tolist(),
            "norm": float(np.linalg.norm(theirs["plain"][0])),
        }
        lines = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in golden.items())
        args.golden.write_text("{\n" + lines + "\n}\n")


if __name__ == "__main__":
    main()
