"""Convert MediaPipe's TFLite face models to the safetensors files keyfer ships.

Used only to regenerate the shipped weights; run time needs neither ``tflite`` nor ``mediapipe``::

    python -m tools.convert_mediapipe               # fetch the wheel, rewrite weights/, SHA256SUMS
    python -m tools.convert_mediapipe --check       # regenerate in memory, compare byte for byte
    python -m tools.convert_mediapipe --fetch-only  # only download the wheel (the tests use it)

The wheel comes from ``pip download --no-deps mediapipe==0.10.21`` and is cached in
``.cache/mediapipe``. The weights stay MediaPipe's original fp16 values, in PyTorch layout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

from keyfer.faces.weights import WEIGHTS_DIR, expected_sha256
from tools.sha256sums import record_sha256

MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
DEFAULT_CACHE = Path(".cache/mediapipe")
SUPPORTED_OPS = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAX_POOL_2D", "PAD", "DEQUANTIZE", "PRELU", "RELU",
    "RESHAPE", "CONCATENATION",
}  # fmt: skip


@dataclass(frozen=True)
class SourceModel:
    """One TFLite model in the wheel and how its layers map onto our module's parameters."""

    member: str
    layers: dict[str, tuple[str, str]]  # our module prefix -> (TFLite layer name, kind)


def _blazeface_layers() -> dict[str, tuple[str, str]]:
    layers = {"stem": ("conv2d", "conv")}
    for i in range(16):
        layers[f"blocks.{i}.dw"] = ("depthwise_conv2d" + (f"_{i}" if i else ""), "dw")
        layers[f"blocks.{i}.pw"] = (f"conv2d_{i + 1}", "conv")
    for ours, theirs in [("classifier", "classificator"), ("regressor", "regressor")]:
        for stride in (8, 16):
            layers[f"{ours}_{stride}"] = (f"{theirs}_{stride}", "conv")
    return layers


def _block(prefix: str, dw: int, pw: int, act: int) -> dict[str, tuple[str, str]]:
    return {
        f"{prefix}.dw": (f"depthwise_conv2d_{dw}", "dw"),
        f"{prefix}.pw": (f"conv2d_{pw}", "conv"),
        f"{prefix}.act": (f"p_re_lu_{act}", "prelu"),
    }


def _head(prefix: str, blocks: list[int], reduce: int, refine: tuple[int, int, int], out: int):
    layers = {}
    for j, first in enumerate(blocks):
        layers |= _block(
            f"{prefix}.blocks.{j}", dw=first, pw=_PW_OF_DW[first], act=_ACT_OF_DW[first]
        )
    layers[f"{prefix}.reduce"] = (f"conv2d_{reduce}", "conv")
    layers[f"{prefix}.reduce_act"] = (f"p_re_lu_{refine[2] - 1}", "prelu")
    layers |= _block(f"{prefix}.refine", *refine)
    layers[f"{prefix}.out"] = (f"conv2d_{out}", "conv")
    return layers


# In face_landmark.tflite the mesh branch continues the trunk numbering (depthwise 15..18,
# conv 16..21, PReLU 16..20); the presence branch uses depthwise 23..24, conv 28..31, PReLU 26..28.
_PW_OF_DW = {15: 16, 16: 17, 17: 18, 23: 28}
_ACT_OF_DW = {15: 16, 16: 17, 17: 18, 23: 26}


def _facemesh_layers() -> dict[str, tuple[str, str]]:
    layers = {"stem": ("conv2d_1", "conv"), "stem_act": ("p_re_lu_1", "prelu")}
    for i in range(14):
        layers |= _block(f"trunk.{i}", dw=i + 1, pw=i + 2, act=i + 2)
    layers |= _head("mesh_head", [15, 16, 17], reduce=19, refine=(18, 20, 20), out=21)
    layers |= _head("presence_head", [23], reduce=29, refine=(24, 30, 28), out=31)
    return layers


MODELS = {
    "blazeface_short_range": SourceModel(
        "mediapipe/modules/face_detection/face_detection_short_range.tflite", _blazeface_layers()
    ),
    "facemesh": SourceModel(
        "mediapipe/modules/face_landmark/face_landmark.tflite", _facemesh_layers()
    ),
}


def fetch_wheel(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The mediapipe wheel, downloaded once with ``pip download --no-deps`` into ``cache_dir``."""
    wheels = sorted(cache_dir.glob("mediapipe-0.10.21-*.whl"))
    if not wheels:
        cache_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             MEDIAPIPE_REQUIREMENT, "-d", str(cache_dir)],
            check=True,
        )  # fmt: skip
        wheels = sorted(cache_dir.glob("mediapipe-0.10.21-*.whl"))
    return wheels[0]


def tflite_bytes(name: str, cache_dir: Path = DEFAULT_CACHE) -> bytes:
    """The original ``.tflite`` file of model ``name`` (a key of :data:`MODELS`)."""
    with zipfile.ZipFile(fetch_wheel(cache_dir)) as wheel:
        return wheel.read(MODELS[name].member)


def read_constants(model_bytes: bytes) -> dict[str, np.ndarray]:
    """Every constant float tensor of a TFLite model, by tensor name, after checking its op set."""
    import tflite

    model = tflite.Model.GetRootAsModel(model_bytes, 0)
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    for i in range(graph.OperatorsLength()):
        code = model.OperatorCodes(graph.Operators(i).OpcodeIndex())
        op = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        if op not in SUPPORTED_OPS:
            raise ValueError(f"unsupported TFLite op {op}; supported: {sorted(SUPPORTED_OPS)}")
    dtypes = {tflite.TensorType.FLOAT16: np.float16, tflite.TensorType.FLOAT32: np.float32}
    constants = {}
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if tensor.Type() in dtypes and isinstance(data, np.ndarray) and data.size:
            shape = tensor.ShapeAsNumpy()
            array = np.frombuffer(data.tobytes(), dtype=dtypes[tensor.Type()]).reshape(shape)
            constants[tensor.Name().decode()] = array
    return constants


def _to_torch_layout(array: np.ndarray, kind: str, field: str) -> np.ndarray:
    if field == "Bias":
        return array
    if kind == "prelu":
        return array.reshape(-1)
    if kind == "dw":
        return array.transpose(3, 0, 1, 2)  # (1, H, W, C) -> (C, 1, H, W)
    return array.transpose(0, 3, 1, 2)  # (O, H, W, I) -> (O, I, H, W)


def convert(name: str, model_bytes: bytes) -> dict[str, torch.Tensor]:
    """The fp16 state dict of our module for TFLite model ``name``, every constant accounted for."""
    constants = read_constants(model_bytes)
    state = {}
    for prefix, (layer, kind) in MODELS[name].layers.items():
        fields = (
            [("Alpha", "weight")] if kind == "prelu" else [("Kernel", "weight"), ("Bias", "bias")]
        )
        for theirs, ours in fields:
            array = _to_torch_layout(constants.pop(f"{layer}/{theirs}"), kind, theirs)
            state[f"{prefix}.{ours}"] = torch.from_numpy(array.copy())
    leftover = [k for k in constants if not k.endswith(("Paddings", "shape"))]
    if leftover:
        raise ValueError(f"{name}: TFLite constants not mapped to any parameter: {leftover}")
    return state


def serialize(name: str, model_bytes: bytes) -> bytes:
    """The safetensors bytes for model ``name``; identical for identical TFLite input."""
    # One metadata key: safetensors writes several in random order, which breaks reproducibility.
    source = {
        "source": f"{MEDIAPIPE_REQUIREMENT}:{MODELS[name].member}",
        "source_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "license": "Apache-2.0 (MediaPipe); see NOTICE",
    }
    return save(convert(name, model_bytes), metadata={"keyfer": json.dumps(source, sort_keys=True)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--check", action="store_true", help="compare with the shipped files")
    parser.add_argument("--fetch-only", action="store_true", help="only download the wheel")
    args = parser.parse_args(argv)
    if args.fetch_only:
        print(fetch_wheel(args.cache_dir))
        return 0
    digests = {}
    for name in MODELS:
        data = serialize(name, tflite_bytes(name, args.cache_dir))
        digests[f"{name}.safetensors"] = hashlib.sha256(data).hexdigest()
        if not args.check:
            (args.out / f"{name}.safetensors").write_bytes(data)
    if args.check:
        shipped = expected_sha256()
        bad = [f for f, d in digests.items() if shipped.get(f) != d]
        print("mismatch: " + ", ".join(bad) if bad else "all weights reproduce byte for byte")
        return 1 if bad else 0
    print(record_sha256(args.out, digests), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
