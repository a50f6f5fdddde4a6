"""onnxruntime speed of the fast model's crop network with PReLU exported as ONNX PRelu (plain
``nn.PReLU``) or as ``relu(x) - a * relu(-x)`` (keyfer's :class:`keyfer.faces.blocks.PReLU`).

    python benchmarks/onnx_prelu.py --out docs/results/onnx_prelu.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from keyfer.export import OnnxCropNetwork, export_onnx
from keyfer.faces import blocks
from keyfer.models.registry import create_model


def crops_per_second(path: Path, threads: int, repeats: int) -> float:
    network = OnnxCropNetwork(path, threads)
    crops = np.random.default_rng(0).random((32, 3, 192, 192), dtype=np.float32)
    network(crops)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        network(crops)
        times.append(time.perf_counter() - start)
    return round(32 / float(np.median(times)), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, forward in (("onnx_prelu", torch.nn.PReLU.forward), ("relu_form", None)):
            original = blocks.PReLU.forward
            if forward is not None:  # export the plain nn.PReLU op
                blocks.PReLU.forward = forward
            try:
                path = Path(folder) / f"{name}.onnx"
                differences = export_onnx(create_model("keyfer-ferplus-fast"), path)
            finally:
                blocks.PReLU.forward = original
            results[name] = {
                "crops_per_s_batch32": crops_per_second(path, args.threads, args.repeats),
                "max_abs_difference_to_torch": differences,
            }
            print(name, results[name], flush=True)
    if args.out:
        args.out.write_text(json.dumps({"threads": args.threads, **results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
