"""The TFLite reference path: MediaPipe's original models run by the LiteRT interpreter, behind
the same interface as keyfer's PyTorch modules. Used by the equivalence tests, the golden
reference (``tools.make_golden``) and the speed benchmark (``benchmarks.bench_faces``); needs
the ``test`` extra (``ai-edge-litert``) and the mediapipe wheel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from keyfer.faces.facemesh import NUM_MESH_POINTS, FaceMeshOutput
from tools.convert_mediapipe import DEFAULT_CACHE, tflite_bytes

# FaceMesh tensors that hold the taps, by stride.
FACEMESH_TAP_TENSORS = {
    2: "p_re_lu_3",
    4: "p_re_lu_6",
    8: "p_re_lu_9",
    16: "p_re_lu_12",
    32: "p_re_lu_15",
}


class LiteRTModel(nn.Module):
    """A ``.tflite`` model from the mediapipe wheel run one NHWC sample at a time."""

    def __init__(self, name: str, cache_dir: Path = DEFAULT_CACHE, threads: int = 1) -> None:
        super().__init__()
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(
            model_content=tflite_bytes(name, cache_dir),
            num_threads=threads,
            experimental_preserve_all_tensors=True,
        )
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        self.tensors = {d["name"]: d["index"] for d in self.interpreter.get_tensor_details()}

    def run(self, sample: np.ndarray) -> None:
        """Invoke on one (H, W, C) float32 sample; read results with :meth:`tensor`."""
        self.interpreter.set_tensor(self.input_index, sample[None].astype(np.float32))
        self.interpreter.invoke()

    def tensor(self, name: str) -> np.ndarray:
        return self.interpreter.get_tensor(self.tensors[name])


class LiteRTBlazeFace(LiteRTModel):
    """Drop-in for :class:`keyfer.faces.blazeface.BlazeFace`."""

    def __init__(self, **kwargs) -> None:
        super().__init__("blazeface_short_range", **kwargs)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        regressors, logits = [], []
        for sample in images.permute(0, 2, 3, 1).float().cpu().numpy():
            self.run(sample)
            regressors.append(self.tensor("regressors")[0])
            logits.append(self.tensor("classificators")[0, :, 0])
        return torch.from_numpy(np.stack(regressors)), torch.from_numpy(np.stack(logits))


class LiteRTFaceMesh(LiteRTModel):
    """Drop-in for :class:`keyfer.faces.facemesh.FaceMesh`, taps included."""

    def __init__(self, **kwargs) -> None:
        super().__init__("facemesh", **kwargs)

    def forward(self, crops: torch.Tensor, taps=()) -> FaceMeshOutput:
        meshes, presence, features = [], [], {s: [] for s in taps}
        for sample in crops.permute(0, 2, 3, 1).float().cpu().numpy():
            self.run(sample)
            meshes.append(self.tensor("conv2d_21").reshape(NUM_MESH_POINTS, 3))
            presence.append(self.tensor("conv2d_31").reshape(()))
            for stride in taps:
                features[stride].append(
                    self.tensor(FACEMESH_TAP_TENSORS[stride])[0].transpose(2, 0, 1)
                )
        if not meshes:
            return FaceMeshOutput(torch.zeros(0, NUM_MESH_POINTS, 3), torch.zeros(0), {})
        return FaceMeshOutput(
            torch.from_numpy(np.stack(meshes)),
            torch.sigmoid(torch.from_numpy(np.stack(presence))),
            {s: torch.from_numpy(np.stack(f)) for s, f in features.items()},
        )
