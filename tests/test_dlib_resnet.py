"""dlib's serialized-network reader, the DlibResNet port, its weights and dlib's chip alignment."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from keyfer.errors import KeyferError
from keyfer.faces.dlib_align import ALIGNMENT_POINTS, chip_transform, extract_chip
from keyfer.faces.dlib_resnet import (
    EMBEDDING_DIM,
    TAPS,
    DlibResNet,
    _add_zero_padded,
    tap_coordinates,
)
from keyfer.faces.weights import weight_path
from tests.conftest import ROOT
from tools import convert_dlib
from tools.dlib_format import DlibFormatError, DlibReader, read_network

GOLDEN = ROOT / "tests" / "data" / "dlib_golden.json"
SDIST = ROOT / ".cache" / "dlib" / convert_dlib.SDIST_NAME
needs_weights = pytest.mark.skipif(
    not weight_path("dlib_resnet").is_file(),
    reason="dlib_resnet.safetensors is absent; run python -m tools.convert_dlib",
)


# A minimal writer that follows dlib/serialize.h, float_details.h and dnn/tensor.h.
def w_int(value: int) -> bytes:
    magnitude = abs(value).to_bytes(8, "little").rstrip(b"\0") or b"\0"
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def w_float(value: float) -> bytes:
    if math.isnan(value) or math.isinf(value):
        special = 32002 if math.isnan(value) else (32000 if value > 0 else 32001)
        return w_int(0) + w_int(special)
    fraction, exponent = math.frexp(float(np.float32(value)))
    mantissa, exponent = int(fraction * 2**24), exponent - 24
    while mantissa and mantissa & 0xFF == 0:
        mantissa, exponent = mantissa >> 8, exponent + 8
    return w_int(mantissa) + w_int(exponent)


def w_str(text: str) -> bytes:
    return w_int(len(text)) + text.encode()


def w_bool(value: bool) -> bytes:
    return b"1" if value else b"0"


def w_tensor(array: np.ndarray) -> bytes:
    shape = (tuple(array.shape) + (1, 1, 1, 1))[:4] if array.size else (0, 0, 0, 0)
    return w_int(2) + b"".join(map(w_int, shape)) + array.astype("<f4").tobytes()


def w_alias(*shape: int) -> bytes:
    return w_int(1) + b"".join(w_int(s) for s in (shape + (1, 1, 1))[:4])


EMPTY = w_tensor(np.zeros(0, np.float32))
FILTERS = np.arange(2 * 3 * 1 * 1, dtype=np.float32).reshape(2, 3, 1, 1)
FC = np.arange(2 * 4, dtype=np.float32).reshape(2, 4) / 8


def tiny_network() -> bytes:
    """loss_metric<fc_no_bias<4, relu<tag1<con<2,1,1,1,1, input_rgb_image_sized<8>>>>>>."""
    con = w_str("con_4") + w_tensor(np.concatenate([FILTERS.ravel(), [0.5, -0.5]]))
    con += b"".join(map(w_int, (2, 1, 1, 1, 1, 0, 0))) + w_alias(2, 3, 1, 1) + w_alias(1, 2)
    con += w_float(1) * 3 + w_float(0)
    fc = w_str("fc_2") + w_int(4) + w_int(2) + w_tensor(FC) + w_alias(2, 4) + w_alias(0)
    fc += w_int(1) + w_float(1) * 3 + w_float(0)
    state = w_bool(True) + w_bool(True) + w_bool(False) + EMPTY + EMPTY
    return b"".join([
        w_int(1), w_str("loss_metric_2"), w_float(0.04), w_float(0.6),
        w_int(2), w_int(2), w_int(1), w_int(3),  # versions: fc, relu, tag, con (on the input)
        w_str("input_rgb_image_sized"), w_float(122.782), w_float(117.001), w_float(104.298),
        w_int(8), w_int(8),
        con, state, EMPTY, w_int(1),  # grad_final, sample_expansion_factor
        w_str("relu_"), state, EMPTY,  # params_grad
        fc, state, EMPTY,
    ])  # fmt: skip


TINY_SPEC = ["layer", "layer", "tag", "layer"]


@pytest.mark.parametrize("value", [0, 1, 255, 256, -5, -300, 2**40, 2**63 - 1])
def test_integers_round_trip(value):
    assert DlibReader(w_int(value)).int() == value


def test_integer_encoding_matches_dlib():
    assert w_int(1) == b"\x01\x01" and w_int(0) == b"\x01\x00"
    assert w_int(-28) == b"\x81\x1c" and w_int(300) == b"\x02\x2c\x01"


@pytest.mark.parametrize("value", [0.0, 0.04, -3.5, 122.782, 1e-30, math.inf, -math.inf])
def test_floats_round_trip(value):
    assert DlibReader(w_float(value)).float() == float(np.float32(value))


def test_float_encoding_matches_dlib_and_nan():
    assert w_float(0.04) == bytes.fromhex("030ad7a3811c")  # as in the shipped .dat's loss
    assert math.isnan(DlibReader(w_float(math.nan)).float())


def test_strings_bools_and_tensors():
    array = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4) - 7.25
    reader = DlibReader(w_str("affine_") + w_bool(True) + w_bool(False) + w_tensor(array))
    assert reader.string() == "affine_"
    assert reader.bool() is True and reader.bool() is False
    np.testing.assert_array_equal(reader.tensor(), array)
    assert reader.pos == len(reader.data)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"\x02\x01", "stream ends"), (b"\x31\x00", "control byte"), (b"2", "control byte")],
)
def test_corrupt_primitives_raise_keyfer_errors(data, message):
    with pytest.raises(KeyferError, match=message):
        DlibReader(data).int()


def test_reads_a_small_network_in_forward_order():
    network = read_network(tiny_network(), TINY_SPEC)
    assert network.loss.attrs["margin"] == pytest.approx(0.04)
    assert network.input.attrs["nr"] == 8
    assert network.input.attrs["avg_red"] == float(np.float32(122.782))
    assert [layer.kind for layer in network.layers] == ["con_4", "relu_", "fc_2"]
    con, _, fc = network.layers
    assert con.attrs["filters"] == (2, 3, 1, 1) and con.attrs["stride_y"] == 1
    np.testing.assert_array_equal(con.params[:6], FILTERS.ravel())
    np.testing.assert_array_equal(fc.params, FC.ravel())
    assert fc.attrs["bias_mode"] == 1


def test_network_errors_are_keyfer_errors():
    data = tiny_network()
    with pytest.raises(DlibFormatError, match="bytes left"):
        read_network(data + b"\x00", TINY_SPEC)
    with pytest.raises(DlibFormatError, match="stream ends"):
        read_network(data[:-40], TINY_SPEC)
    with pytest.raises(DlibFormatError, match="unsupported dlib layer 'relu_x'"):
        read_network(data.replace(w_str("relu_"), w_str("relu_x")), TINY_SPEC)
    with pytest.raises(KeyferError):
        convert_dlib.convert(data)  # a valid dlib stream, but not the ResNet


def test_network_spec_matches_the_resnet():
    spec = convert_dlib.network_spec()
    assert spec.count("layer") == 108 and spec.count("tag") == 18 and spec.count("skip") == 4


def test_stage_shapes_and_embedding():
    model = DlibResNet().eval()
    chips = torch.randint(0, 256, (2, 3, 150, 150), dtype=torch.uint8)
    with torch.no_grad():
        out = model(chips, taps=TAPS)
    assert out.embedding.shape == (2, EMBEDDING_DIM)
    for name, spec in TAPS.items():
        assert out.taps[name].shape == (2, spec.channels, spec.size, spec.size)
    assert model(chips.float()[:1]).taps == {}
    with pytest.raises(ValueError, match="unknown taps"):
        model(chips, taps=["level9"])
    with pytest.raises(ValueError, match="150, 150"):
        model(torch.zeros(1, 3, 160, 160))


def test_levels_after_a_tap_continue_the_forward_pass():
    """A cached level3 map run through the levels after it gives the whole network's result."""
    torch.manual_seed(0)
    model = DlibResNet().eval()
    chips = torch.rand(2, 3, 150, 150) * 255
    with torch.no_grad():
        whole = model(chips, taps={"stem", "level3", "level2", "level0"})
        upper = model.levels_after("level3", whole.taps["level3"], {"level2", "level0"})
        from_stem = model.levels_after("stem", whole.taps["stem"])
    assert set(upper.taps) == {"level2", "level0"}
    torch.testing.assert_close(upper.taps["level2"], whole.taps["level2"])
    torch.testing.assert_close(upper.embedding, whole.embedding)
    torch.testing.assert_close(from_stem.embedding, whole.embedding)
    with pytest.raises(ValueError, match="unknown tap"):
        model.levels_after("level9", whole.taps["level3"])


def test_zero_padded_add_and_tap_coordinates():
    a, b = torch.ones(1, 2, 3, 3), torch.full((1, 1, 4, 4), 2.0)
    total = _add_zero_padded(a, b)
    assert total.shape == (1, 2, 4, 4)
    assert total[0, 0, 0, 0] == 3 and total[0, 0, 3, 3] == 2 and total[0, 1, 3, 3] == 0
    assert total[0, 1, 2, 2] == 1
    centres = torch.tensor([[3.5 + 4 * 0.5, 3.5 + 64 * 1.5]])
    assert tap_coordinates(centres, "stem")[0, 0] == 0.5
    assert tap_coordinates(centres, "level0")[0, 1] == 1.5


def test_chip_transform_of_dlib_template_is_its_half_pixel_shift():
    """Points exactly on dlib's template give dlib's chip: identity plus its half-pixel shift."""
    from keyfer.faces.dlib_align import _MEAN_FACE_X, _MEAN_FACE_Y

    template = (0.25 + np.stack([_MEAN_FACE_X, _MEAN_FACE_Y], 1)) / 1.5 * 150
    landmarks = np.zeros((68, 2))
    landmarks[17:] = template + 0.5  # dlib's frame -> keyfer's
    expected = np.array([[1, 0, 0.5], [0, 1, 0.5]])
    np.testing.assert_allclose(chip_transform(landmarks), expected, atol=1e-9)
    assert len(ALIGNMENT_POINTS) == 33


def test_extract_chip_identity_copies_pixels():
    image = np.random.default_rng(0).integers(0, 256, (160, 170, 3), dtype=np.uint8)
    chip = extract_chip(image, np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    np.testing.assert_array_equal(chip, image[:150, :150])


@needs_weights
def test_shipped_weights_give_finite_descriptors():
    chips = torch.randint(0, 256, (2, 3, 150, 150), generator=torch.Generator().manual_seed(3))
    embedding = DlibResNet.from_pretrained()(chips).embedding
    assert embedding.shape == (2, EMBEDDING_DIM) and torch.isfinite(embedding).all()


@needs_weights
@pytest.mark.skipif(not GOLDEN.is_file(), reason="tests/data/dlib_golden.json is absent")
def test_golden_descriptor_of_the_example_face(astronaut):
    """dlib's own descriptor (python -m tools.compare_dlib --golden) of a chip of the example."""
    golden = json.loads(GOLDEN.read_text())
    chip = extract_chip(astronaut, chip_transform(np.array(golden["landmarks68"])))
    embedding = DlibResNet.from_pretrained()(torch.from_numpy(chip).permute(2, 0, 1)[None])
    head = embedding.embedding[0, : len(golden["embedding_head"])]
    np.testing.assert_allclose(head.numpy(), golden["embedding_head"], atol=2e-3)
    assert float(embedding.embedding.norm()) == pytest.approx(golden["norm"], abs=2e-3)


@pytest.mark.skipif(
    not SDIST.is_file(),
    reason="needs .cache/dlib/face_recognition_models-0.3.0.tar.gz "
    "(python -m tools.convert_dlib --fetch-only)",
)
def test_conversion_reproduces_shipped_weights_byte_for_byte():
    data = convert_dlib.serialize(convert_dlib.dat_bytes(SDIST.parent))
    assert data == weight_path("dlib_resnet").read_bytes()
