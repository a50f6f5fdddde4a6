"""ONNX export of the aligned-crop network ((B, 3, 192, 192) crops -> mesh, presence, logits and
keypoint importance) and of the BlazeFace detector ((B, 3, 128, 128) views -> regressors, logits).

Needs the ``onnx`` extra (``onnx``, ``onnxscript``, ``onnxruntime``). Each exported graph is
checked against PyTorch with onnxruntime on random inputs, and the largest differences are
returned. Modules export some ops in forms that onnxruntime keeps in its blocked conv layout
(see :mod:`keyfer.faces.blocks` and ``benchmarks/onnx_export_forms.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from keyfer.errors import KeyferError
from keyfer.faces.anchors import INPUT_SIZE
from keyfer.faces.blazeface import BlazeFace
from keyfer.faces.weights import expected_sha256, weight_path
from keyfer.nkf.model import NKFModel

log = logging.getLogger(__name__)
OPSET = 18  # GridSample needs 16 or later
GRAPH_REVISION = 3  # bumped when the exported graphs change, so that cached exports are redone
OUTPUTS = ("mesh", "presence", "logits", "importance")
DETECTOR_OUTPUTS = ("regressors", "logits")


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


def _export(
    network: nn.Module, input_name: str, outputs: tuple[str, ...], size: int, path: Path
) -> dict[str, float]:
    """Export ``network`` on (B, 3, size, size) inputs with a dynamic batch axis, then compare
    onnxruntime with PyTorch on 3 random inputs; returns {output: max abs diff}."""
    _require_onnx()
    network = network.cpu().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)  # "torchvision is not installed": keyfer needs none
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations
            torch.onnx.export(
                network, (torch.rand(2, 3, size, size),), str(path), input_names=[input_name],
                output_names=list(outputs), dynamic_shapes=({0: batch},),
                opset_version=OPSET, dynamo=True, verbose=False,
            )  # fmt: skip
    finally:
        registry_log.setLevel(level)
    inputs = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = network(inputs)
    ours = _OnnxSession(path, input_name, outputs).run(inputs.numpy())
    return {
        name: float(np.abs(mine - theirs.numpy()).max())
        for name, mine, theirs in zip(outputs, ours, reference, strict=True)
    }


def export_onnx(model: NKFModel, path: Path) -> dict[str, float]:
    """Export ``model``'s crop network to ``path`` (crops in [0, 1]); see :func:`_export`."""
    return _export(CropNetwork(model), "crops", OUTPUTS, 192, path)


def export_detector_onnx(path: Path) -> dict[str, float]:
    """Export the shipped BlazeFace to ``path`` (views in [-1, 1]); see :func:`_export`."""
    return _export(BlazeFace.from_pretrained(), "views", DETECTOR_OUTPUTS, INPUT_SIZE, path)


class _OnnxSession:
    """An onnxruntime CPU session with one input and the given outputs, checked on load."""

    def __init__(
        self, path: Path, input_name: str, outputs: tuple[str, ...], threads: int | None = None
    ) -> None:
        _require_onnx()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # Spinning worker threads would take the cores from PyTorch's work between runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise KeyferError(f"{path} is not a readable ONNX model: {error}") from error
        names = [output.name for output in self.session.get_outputs()]
        if names != list(outputs):
            raise KeyferError(
                f"{path} has outputs {names}, not {list(outputs)}; re-export it with this "
                "version of keyfer (keyfer export)"
            )
        self.input_name = input_name

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        return self.session.run(
            None, {self.input_name: np.ascontiguousarray(inputs, dtype=np.float32)}
        )


class OnnxCropNetwork(_OnnxSession):
    """An exported crop network run by onnxruntime on the CPU."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__(path, "crops", OUTPUTS, threads)

    def __call__(self, crops: np.ndarray) -> list[np.ndarray]:
        """(B, 3, 192, 192) float32 crops -> [mesh, presence, logits, importance] arrays."""
        return self.run(crops)


class OnnxDetectorNetwork(_OnnxSession):
    """The exported BlazeFace run by onnxruntime; called like :class:`BlazeFace`."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__(path, "views", DETECTOR_OUTPUTS, threads)

    def __call__(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 128, 128) views in [-1, 1] -> regressors (B, 896, 16), logits (B, 896)."""
        regressors, logits = (
            torch.from_numpy(a).to(views.device) for a in self.run(views.cpu().numpy())
        )
        return regressors, logits


def onnx_cache_dir() -> Path:
    """Where exports made on first use live: ``$XDG_CACHE_HOME/keyfer/onnx``, by default
    ``~/.cache/keyfer/onnx``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "keyfer" / "onnx"


def _cached(stem: str, key: str, export) -> Path:
    tag = hashlib.sha256(f"{key}:{OPSET}:{GRAPH_REVISION}".encode()).hexdigest()[:16]
    path = onnx_cache_dir() / f"{stem}-{tag}.onnx"
    if not path.is_file():
        log.info("exporting %s to ONNX once: %s", stem, path)
        partial = path.with_suffix(f".partial-{os.getpid()}.onnx")
        try:
            differences = export(partial)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(path)
        path.with_suffix(".json").write_text(json.dumps(differences))
    return path


def cached_export(model: NKFModel, name: str, weights_digest: str) -> Path:
    """The model's ONNX file in :func:`onnx_cache_dir`, exported on first use."""
    key = f"{name}:{weights_digest}:{','.join(OUTPUTS)}"
    return _cached(Path(name).stem, key, lambda path: export_onnx(model, path))


def cached_detector_export() -> Path:
    """BlazeFace's ONNX file in :func:`onnx_cache_dir`, exported on first use."""
    digest = expected_sha256()[weight_path("blazeface_short_range").name]
    return _cached("blazeface", f"blazeface:{digest}", export_detector_onnx)
