"""onnxruntime speed of the fast model's crop network as each of keyfer's export forms is added.

onnxruntime runs convolutions in a blocked layout (NCHWc) and converts to and from it around
ops it cannot run that way. keyfer's modules therefore export three things in other forms
(``torch.compiler.is_exporting()``); this script exports the network with none of them, then
adds them one at a time, and measures crops/s at batch 32:

1. ``plain``: PReLU as ONNX PRelu, the widening shortcut as a channel Pad, GridSample.
2. ``prelu``: PReLU as relu(x) + depthwise 1x1 convs (:class:`keyfer.faces.blocks.PReLU`).
3. ``widen``: the widening shortcut as a 1x1 conv, fused with the add (``blocks._widen``).
4. ``gather``: Keypoint Features as row gathers instead of GridSample (keyfer's export).

    python -m benchmarks.onnx_export_forms --out docs/results/onnx_export_forms.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import onnxruntime
import torch
import torch.nn.functional as F

from keyfer.export import OnnxCropNetwork, export_onnx
from keyfer.models.registry import create_model
from keyfer.nkf import keypoint_features

STEPS = ("plain", "prelu", "widen", "gather")


def _padded(x: torch.Tensor, channels: int) -> torch.Tensor:
    return F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1]))


def _grid_sampled(tap: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    height, width = tap.shape[-2:]
    size = torch.tensor([width, height], dtype=cells.dtype)
    grid = (2 * (cells + 0.5) / size - 1).unsqueeze(2)
    sampled = F.grid_sample(tap, grid, "bilinear", padding_mode="border", align_corners=False)
    return sampled.squeeze(-1).transpose(1, 2)


def _forms(step: str) -> contextlib.ExitStack:
    """Patch out the export forms that come after ``step`` in :data:`STEPS`."""
    stack = contextlib.ExitStack()
    later = STEPS[STEPS.index(step) + 1 :]
    if "prelu" in later:
        stack.enter_context(mock.patch("keyfer.faces.blocks.PReLU.forward", torch.nn.PReLU.forward))
    if "widen" in later:
        stack.enter_context(mock.patch("keyfer.faces.blocks._widen", _padded))
    if "gather" in later:
        stack.enter_context(mock.patch.object(keypoint_features, "_gather_bilinear", _grid_sampled))
    return stack


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
    parser.add_argument("--model", default="keyfer-ferplus-fast")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for step in STEPS:
            path = Path(folder) / f"{step}.onnx"
            with _forms(step):
                differences = export_onnx(create_model(args.model), path)
            results[step] = {
                "crops_per_s_batch32": crops_per_second(path, args.threads, args.repeats),
                "max_abs_difference_to_torch": differences,
            }
            print(step, results[step], flush=True)
    if args.out:
        machine = {"cpu": platform.machine(), "onnxruntime": onnxruntime.__version__}
        record = {"model": args.model, "threads": args.threads, "machine": machine, **results}
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
