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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from keyfer.errors import KeyferError
from keyfer.faces.anchors import INPUT_SIZE
from keyfer.faces.blazeface import BlazeFace
from keyfer.faces.weights import expected_sha256
from keyfer.nkf.model import NKFModel

log = logging.getLogger(__name__)
OPSET = 18  # GridSample needs 16 or later
GRAPH_REVISION = 3  # bumped when the exported graphs change, so that cached exports are redone
OUTPUTS = ("mesh", "presence", "logits", "importance")
DETECTOR_OUTPUTS = ("regressors", "logits")
Network = TypeVar("Network", bound="_OnnxSession")


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
    """Export ``network`` on (B, 3, size, size) inputs with a dynamic batch axis into the one file
    ``path`` (weights inside it, no .data file beside it), then compare onnxruntime with PyTorch
    on 3 random inputs; returns {output: max abs diff}."""
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
                opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
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

    def crop_outputs(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 192, 192) crops -> (B, C) logits and (B, K) keypoint importances, CPU tensors
        (a :data:`keyfer.crop_predictor.CropNetwork`)."""
        _, _, logits, importance = self(crops.float().cpu().numpy())
        return torch.from_numpy(logits), torch.from_numpy(importance)


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


def _cache_path(stem: str, key: str) -> Path:
    """``<stem>-<16 hex digits>.onnx`` in :func:`onnx_cache_dir`, the digits a sha256 of ``key``,
    keyfer's version, the opset, the graph revision and the shipped networks' sha256 (FaceMesh,
    BlazeFace, dlib's ResNet), so that new weights or a new keyfer never reuse an old export."""
    from keyfer import __version__  # keyfer's package imports this module

    shipped = json.dumps(expected_sha256(), sort_keys=True)
    tag = f"{key}:{__version__}:{OPSET}:{GRAPH_REVISION}:{shipped}"
    return onnx_cache_dir() / f"{stem}-{hashlib.sha256(tag.encode()).hexdigest()[:16]}.onnx"


def crop_network_cache_path(name: str, weights_digest: str) -> Path:
    """Where the crop network of model ``name`` (a shipped name or a checkpoint path; it only
    names the file) is cached; ``weights_digest`` (:attr:`ModelInfo.digest`) keys it."""
    if not weights_digest:
        raise ValueError(f"the export of {name} needs its weights' digest as a cache key")
    return _cache_path(Path(name).stem, f"{weights_digest}:{','.join(OUTPUTS)}")


def detector_cache_path() -> Path:
    """Where BlazeFace's export is cached (its weights' sha256 is in every key)."""
    return _cache_path("blazeface", "blazeface")


def _process_exists(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 on POSIX; assumed elsewhere)."""
    if os.name != "posix":  # Windows' os.kill(pid, 0) sends Ctrl-C instead of probing
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_orphans(folder: Path) -> None:
    """Delete the partial exports (``*.partial-<pid>.onnx``) in ``folder`` of processes that are
    gone (killed mid-export)."""
    for partial in folder.glob("*.partial-*.onnx"):
        pid = partial.suffixes[-2].removeprefix(".partial-")
        if pid.isdigit() and not _process_exists(int(pid)):
            partial.unlink(missing_ok=True)


def _export_into_cache(path: Path, export: Callable[[Path], dict[str, float]]) -> None:
    """Run ``export`` into a private ``*.partial-<pid>.onnx`` file beside ``path`` and rename it
    to ``path``: readers see no file or a whole one, and concurrent exports cannot mix. The
    differences ``export`` returns go beside it with a .json suffix."""
    log.info("exporting %s to ONNX once: %s", path.stem, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path.parent)
    partial = path.with_suffix(f".partial-{os.getpid()}.onnx")
    try:
        differences = export(partial)
        partial.replace(path)
    finally:  # an error or Ctrl-C: leave no partial file behind
        partial.unlink(missing_ok=True)
    path.with_suffix(".json").write_text(json.dumps(differences))


def _cached(
    path: Path, export: Callable[[Path], dict[str, float]], open_network: Callable[[Path], Network]
) -> Network:
    """``open_network(path)``, exporting to ``path`` first when it is missing; a cached file that
    does not open (truncated, damaged) is logged and exported again, once."""
    if path.is_file():
        try:
            return open_network(path)
        except KeyferError as error:
            log.warning("exporting the broken cached file again: %s", error)
    _export_into_cache(path, export)
    return open_network(path)


def cached_crop_network(
    model: NKFModel, name: str, weights_digest: str, threads: int | None = None
) -> OnnxCropNetwork:
    """The model's crop network from its export in :func:`onnx_cache_dir` (made on first use);
    see :func:`crop_network_cache_path` for ``name`` and ``weights_digest``."""
    return _cached(
        crop_network_cache_path(name, weights_digest),
        lambda path: export_onnx(model, path),
        lambda path: OnnxCropNetwork(path, threads),
    )


def cached_detector_network(threads: int | None = None) -> OnnxDetectorNetwork:
    """BlazeFace from its export in :func:`onnx_cache_dir` (made on first use)."""
    return _cached(
        detector_cache_path(), export_detector_onnx, lambda path: OnnxDetectorNetwork(path, threads)
    )
