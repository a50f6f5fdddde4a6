"""ONNX export of the aligned-crop network: (B, 3, 192, 192) crops -> mesh, presence, logits
and keypoint importance.

Needs the ``onnx`` extra (``onnx``, ``onnxscript``, ``onnxruntime``). The exported graph is checked
against PyTorch with onnxruntime on random crops, and the largest differences are returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from keyfer.errors import KeyferError
from keyfer.nkf.model import NKFModel

log = logging.getLogger(__name__)
OPSET = 18  # GridSample needs 16 or later
GRAPH_REVISION = 2  # bumped when the exported graph changes, so that cached exports are redone
OUTPUTS = ("mesh", "presence", "logits", "importance")


class CropNetwork(nn.Module):
    """The exportable part of an NKF model: crops -> (mesh (B,468,3), presence (B,), logits
    (B,C), importance (B,K)); a model without keypoint weights gets zeros for ``importance``."""

    def __init__(self, model: NKFModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(crops)
        importance = out.importance
        if importance is None:
            importance = torch.zeros(crops.shape[0], len(self.model.keypoint_index))
        return out.mesh, out.presence, out.logits, importance


def _require_onnx():
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise KeyferError("ONNX export needs the onnx extra: pip install 'keyfer[onnx]'") from error


def export_onnx(model: NKFModel, path: Path, check_batch: int = 3) -> dict[str, float]:
    """Export ``model``'s crop network to ``path`` with a dynamic batch axis, then compare
    onnxruntime with PyTorch on ``check_batch`` random crops; returns {output: max abs diff}."""
    _require_onnx()
    network = CropNetwork(model.cpu()).eval()
    example = torch.rand(2, 3, 192, 192)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations
        torch.onnx.export(
            network, (example,), str(path), input_names=["crops"], output_names=list(OUTPUTS),
            dynamic_shapes={"crops": {0: batch}}, opset_version=OPSET, dynamo=True, verbose=False,
        )  # fmt: skip
    crops = torch.rand(check_batch, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = network(crops)
    outputs = OnnxCropNetwork(path)(crops.numpy())
    return {
        name: float(np.abs(ours - theirs.numpy()).max())
        for name, ours, theirs in zip(OUTPUTS, outputs, reference, strict=True)
    }


class OnnxCropNetwork:
    """An exported crop network run by onnxruntime on the CPU."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        _require_onnx()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise KeyferError(f"{path} is not a readable ONNX model: {error}") from error
        names = [output.name for output in self.session.get_outputs()]
        if names != list(OUTPUTS):
            raise KeyferError(
                f"{path} has outputs {names}, not {list(OUTPUTS)}; re-export it with this "
                "version of keyfer (keyfer export)"
            )

    def __call__(self, crops: np.ndarray) -> list[np.ndarray]:
        """(B, 3, 192, 192) float32 crops -> [mesh, presence, logits, importance] arrays."""
        return self.session.run(None, {"crops": np.ascontiguousarray(crops, dtype=np.float32)})


def cached_export(model: NKFModel, name: str, weights_digest: str) -> Path:
    """The model's ONNX file in the user cache (``~/.cache/keyfer/onnx``), exported on first use."""
    key = f"{name}:{weights_digest}:{OPSET}:{GRAPH_REVISION}:{','.join(OUTPUTS)}"
    tag = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = Path.home() / ".cache" / "keyfer" / "onnx" / f"{Path(name).stem}-{tag}.onnx"
    if not path.is_file():
        log.info("exporting %s to ONNX once: %s", name, path)
        differences = export_onnx(model, path)
        path.with_suffix(".json").write_text(json.dumps(differences))
    return path
