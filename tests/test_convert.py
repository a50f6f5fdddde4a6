"""The PyTorch ports against MediaPipe's TFLite models run by LiteRT, and weight reproducibility."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from keyfer.faces.blazeface import BlazeFace
from keyfer.faces.facemesh import TAP_STRIDES, FaceMesh
from keyfer.faces.weights import expected_sha256, weight_path
from tests.conftest import MEDIAPIPE_CACHE, needs_tflite
from tools import convert_mediapipe


@pytest.fixture(scope="module")
def litert():
    from tools.litert_reference import LiteRTBlazeFace, LiteRTFaceMesh

    return LiteRTBlazeFace(cache_dir=MEDIAPIPE_CACHE), LiteRTFaceMesh(cache_dir=MEDIAPIPE_CACHE)


@needs_tflite
def test_facemesh_matches_tflite_outputs_and_taps(litert):
    crops = torch.rand(3, 3, 192, 192, generator=torch.Generator().manual_seed(1))
    ours = FaceMesh.from_pretrained()(crops, taps=TAP_STRIDES)
    theirs = litert[1](crops, taps=TAP_STRIDES)
    assert torch.allclose(ours.mesh, theirs.mesh, atol=2e-3)
    assert torch.allclose(ours.presence, theirs.presence, atol=1e-5)
    for stride in TAP_STRIDES:
        assert ours.taps[stride].shape == theirs.taps[stride].shape
        assert torch.allclose(ours.taps[stride], theirs.taps[stride], atol=1e-4)


@needs_tflite
def test_blazeface_matches_tflite(litert):
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2)) * 2 - 1
    regressors, logits = BlazeFace.from_pretrained()(images)
    ref_regressors, ref_logits = litert[0](images)
    assert torch.allclose(regressors, ref_regressors, atol=2e-3)
    assert torch.allclose(logits, ref_logits, atol=2e-3)


@needs_tflite
@pytest.mark.parametrize("name", sorted(convert_mediapipe.MODELS))
def test_conversion_reproduces_shipped_weights_byte_for_byte(name):
    data = convert_mediapipe.serialize(name, convert_mediapipe.tflite_bytes(name, MEDIAPIPE_CACHE))
    assert data == weight_path(name).read_bytes()


def test_shipped_weights_match_sha256sums():
    for file_name, digest in expected_sha256().items():
        path = weight_path(file_name.removesuffix(".safetensors"))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_layout_conversion_of_kernels():
    ohwi = np.arange(2 * 3 * 3 * 4).reshape(2, 3, 3, 4)
    to_torch = convert_mediapipe._to_torch_layout
    assert to_torch(ohwi, "conv", "Kernel")[1, 3, 0, 2] == ohwi[1, 0, 2, 3]
    depthwise = np.arange(3 * 3 * 5).reshape(1, 3, 3, 5)
    assert to_torch(depthwise, "dw", "Kernel")[4, 0, 2, 1] == depthwise[0, 2, 1, 4]
