"""AFW landmarks with FaceMesh run on the gray (luma) crop, as ``keyfer predict`` does for gray3
models: the detection and the alignment stay on the colour photo.

    python studies/2026-11-afw-gray-mesh/afw_gray_mesh.py afw_gray.json --afw AFW_DIR
    keyfer eval-landmarks afw_gray.json AFW_DIR \\
        --results docs/results/afw_landmarks.json --variant gray-crop-mesh --markdown ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from keyfer.faces.facemesh import FaceMesh
from keyfer.faces.pipeline import FacePipeline
from keyfer.io.records import RecordWriter
from keyfer.preprocessing import gray3_crops
from keyfer.runner import landmarks_describer, run_images


class GrayFaceMesh(torch.nn.Module):
    """FaceMesh on the luma of its crops, replicated to three channels."""

    def __init__(self, facemesh: FaceMesh) -> None:
        super().__init__()
        self.facemesh = facemesh

    def forward(self, crops: torch.Tensor, taps=()):
        return self.facemesh(gray3_crops(crops), taps=taps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--afw", type=Path, required=True, help="the AFW folder")
    args = parser.parse_args()
    pipeline = FacePipeline()
    pipeline.facemesh = GrayFaceMesh(pipeline.facemesh)
    header = {"keyfer_version": "afw_gray_mesh", "model": None}
    with RecordWriter(args.out, None, header, echo=False) as writer:
        print(run_images([args.afw], landmarks_describer(pipeline), writer).line())


if __name__ == "__main__":
    main()
