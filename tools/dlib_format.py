"""A reader for networks written by ``dlib::serialize`` (dlib's DNN ``.dat`` files), no dlib needed.

dlib's stream is not self-describing: ``tag``/``skip`` layers write only a version number, and an
``add_layer`` writes its sub-network *before* its own details. So reading needs the layer stack,
given as :data:`Spec` tokens from the outermost layer (under the loss) down to the input:
``"layer"`` for a computational layer (``con``, ``affine``, ``relu``, ``max_pool``, ``avg_pool``,
``add_prev``, ``fc``; its details name it) and ``"tag"`` or ``"skip"`` for the structural ones.

The stream, for a loss over layers L0 (outermost) .. Ln (on the input):
``int 1, loss details, version(L0) .. version(Ln), input details, details(Ln) + state(Ln), ..,
details(L0) + state(L0)``, where tags and skips have a version and nothing else.

Encodings (dlib/serialize.h, float_details.h, dnn/tensor.h):
- integers: a control byte (bit 7: negative, bits 0-3: byte count n), then |value| in n bytes,
  little endian;
- floats: two integers, ``mantissa`` and ``exponent``; the value is mantissa * 2**exponent, and
  exponents 32000 / 32001 / 32002 stand for +inf / -inf / nan;
- strings: an integer length, then the bytes; bools: one ASCII byte ``'1'`` or ``'0'``;
- tensors: ``int 2, n, k, nr, nc``, then n*k*nr*nc little-endian float32 (NCHW order);
- alias tensors (parameter views): ``int 1, n, k, nr, nc``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keyfer.errors import WeightsError

Spec = Sequence[str]  # "layer", "tag" or "skip", outermost first
LayerReader = Callable[["DlibReader"], "DlibLayer"]
_FLOAT_SPECIALS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class DlibFormatError(WeightsError):
    """A dlib ``.dat`` stream is truncated, corrupt, or holds a layer this reader does not know."""


@dataclass
class DlibLayer:
    """One layer's details: ``kind`` (its version string, e.g. ``"con_4"``), scalar ``attrs``
    (strides, paddings, sizes, modes) and ``params``, dlib's flat float32 parameter tensor."""

    kind: str
    attrs: dict[str, Any] = field(default_factory=dict)
    params: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


@dataclass
class DlibNetwork:
    """A parsed network: its ``loss`` and ``input`` details and the computational ``layers`` in
    forward order (the one on the input first); tags and skips are dropped."""

    loss: DlibLayer
    input: DlibLayer
    layers: list[DlibLayer]


class DlibReader:
    """Sequential reader of dlib's primitive encodings over a byte string."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise DlibFormatError(
                f"dlib stream ends at byte {len(self.data)}, {n} more bytes wanted at {self.pos}"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        """A variable-length integer."""
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"bad integer control byte {control:#04x} at {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        """A portable float (mantissa, exponent); exact as a Python float for dlib's floats."""
        mantissa, exponent = self.int(), self.int()
        if exponent in _FLOAT_SPECIALS:
            return _FLOAT_SPECIALS[exponent]
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        """A bool written as ASCII ``'1'`` or ``'0'``."""
        byte = bytes(self._take(1))
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool byte {byte!r} at {self.pos - 1}")
        return byte == b"1"

    def string(self) -> str:
        """A length-prefixed string."""
        length = self.int()
        if length < 0 or length > 256:
            raise DlibFormatError(f"implausible string length {length} at {self.pos}")
        return bytes(self._take(length)).decode("ascii", errors="replace")

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor`` as a float32 array of shape (n, k, nr, nc)."""
        self.expect_version("tensor", 2)
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise DlibFormatError(f"negative tensor shape {shape} before byte {self.pos}")
        count = math.prod(shape)
        return np.frombuffer(self._take(4 * count), "<f4").reshape(shape).astype(np.float32)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor`` (a view's shape): (n, k, nr, nc)."""
        self.expect_version("alias_tensor", 1)
        return self.int(), self.int(), self.int(), self.int()

    def expect_version(self, what: str, *allowed: int) -> int:
        """Read an integer version and check it is one of ``allowed``."""
        version = self.int()
        if version not in allowed:
            raise DlibFormatError(f"{what}: version {version} at {self.pos}, expected {allowed}")
        return version


def _ints(reader: DlibReader, *names: str) -> dict[str, int]:
    return {name: reader.int() for name in names}


def _multipliers(reader: DlibReader) -> None:
    for _ in range(4):  # learning-rate and weight-decay multipliers: training state only
        reader.float()


def _con(reader: DlibReader) -> DlibLayer:
    params = reader.tensor()
    attrs = _ints(reader, "num_filters", "nr", "nc", "stride_y", "stride_x")
    attrs |= _ints(reader, "padding_y", "padding_x")
    attrs["filters"], attrs["biases"] = reader.alias_tensor(), reader.alias_tensor()
    _multipliers(reader)
    return DlibLayer("con_4", attrs, params.reshape(-1))


def _affine(reader: DlibReader) -> DlibLayer:
    params = reader.tensor()
    attrs = {"gamma": reader.alias_tensor(), "beta": reader.alias_tensor(), "mode": reader.int()}
    return DlibLayer("affine_", attrs, params.reshape(-1))


def _fc(reader: DlibReader) -> DlibLayer:
    attrs = _ints(reader, "num_outputs", "num_inputs")
    params = reader.tensor()
    attrs["weights"], attrs["biases"] = reader.alias_tensor(), reader.alias_tensor()
    attrs["bias_mode"] = reader.int()
    _multipliers(reader)
    return DlibLayer("fc_2", attrs, params.reshape(-1))


def _pool(kind: str) -> LayerReader:
    def read(reader: DlibReader) -> DlibLayer:
        names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return DlibLayer(kind, _ints(reader, *names))

    return read


def _input_rgb_image_sized(reader: DlibReader) -> DlibLayer:
    means = {name: reader.float() for name in ("avg_red", "avg_green", "avg_blue")}
    return DlibLayer("input_rgb_image_sized", means | _ints(reader, "nr", "nc"))


def _loss_metric_2(reader: DlibReader) -> DlibLayer:
    return DlibLayer("loss_metric_2", {"margin": reader.float(), "dist_thresh": reader.float()})


LAYER_READERS: dict[str, LayerReader] = {
    "con_4": _con,
    "affine_": _affine,
    "fc_2": _fc,
    "max_pool_2": _pool("max_pool_2"),
    "avg_pool_2": _pool("avg_pool_2"),
    "relu_": lambda reader: DlibLayer("relu_"),
    "add_prev_": lambda reader: DlibLayer("add_prev_"),
}
INPUT_READERS = {"input_rgb_image_sized": _input_rgb_image_sized}
LOSS_READERS = {"loss_metric_2": _loss_metric_2}


def _details(reader: DlibReader, readers: dict[str, LayerReader]) -> DlibLayer:
    start = reader.pos
    kind = reader.string()
    if kind not in readers:
        raise DlibFormatError(
            f"unsupported dlib layer {kind!r} at byte {start}; supported: {sorted(readers)}"
        )
    return readers[kind](reader)


def read_network(data: bytes, spec: Spec) -> DlibNetwork:
    """Parse a serialized ``loss<layers..<input>>`` network whose stack is ``spec``.

    Raises :class:`DlibFormatError` (a :class:`~keyfer.errors.KeyferError`) when the bytes do not
    follow dlib's format for that stack, or when bytes are left over.
    """
    if not spec or spec[-1] != "layer":
        raise ValueError("the spec must end with the computational layer on the input")
    reader = DlibReader(data)
    reader.expect_version("add_loss_layer", 1)
    loss = _details(reader, LOSS_READERS)
    versions = []
    for depth, token in enumerate(spec):
        if token in ("tag", "skip"):
            reader.expect_version(f"{token} layer {depth}", 1)
        elif token == "layer":
            on_input = depth == len(spec) - 1
            versions.append(
                reader.expect_version(f"layer {depth}", *((2, 3) if on_input else (1, 2)))
            )
        else:
            raise ValueError(f"unknown spec token {token!r}; use 'layer', 'tag' or 'skip'")
    network_input = _details(reader, INPUT_READERS)
    layers = []
    for index, version in enumerate(reversed(versions)):
        layers.append(_details(reader, LAYER_READERS))
        for _ in range(3):  # setup called, gradient stale, output getters disabled
            reader.bool()
        for _ in range(2):  # x_grad, cached_output
            reader.tensor()
        if index == 0:
            reader.tensor()  # grad_final
            if version == 3:
                reader.int()  # sample_expansion_factor
        elif version == 2:
            reader.tensor()  # params_grad
    if reader.pos != len(data):
        raise DlibFormatError(f"{len(data) - reader.pos} bytes left after the network")
    return DlibNetwork(loss, network_input, layers)
