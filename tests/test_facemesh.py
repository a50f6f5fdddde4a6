"""FaceMesh as an eager module: taps, freezing, dtypes, gradients."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from keyfer.faces.facemesh import TAP_CHANNELS, TAP_STRIDES, FaceMesh


@pytest.fixture(scope="module")
def facemesh() -> FaceMesh:
    return FaceMesh.from_pretrained()


def test_outputs_and_taps_have_documented_shapes(facemesh):
    out = facemesh(torch.rand(2, 3, 192, 192), taps=TAP_STRIDES)
    assert out.mesh.shape == (2, 468, 3)
    assert out.presence.shape == (2,)
    assert ((out.presence >= 0) & (out.presence <= 1)).all()
    for stride in TAP_STRIDES:
        assert out.taps[stride].shape == (2, TAP_CHANNELS[stride], 192 // stride, 192 // stride)


def test_taps_only_on_request(facemesh):
    assert facemesh(torch.rand(1, 3, 192, 192)).taps == {}
    assert set(facemesh(torch.rand(1, 3, 192, 192), taps=[8]).taps) == {8}
    with pytest.raises(ValueError, match="unknown tap strides"):
        facemesh(torch.rand(1, 3, 192, 192), taps=[3])


def test_export_forms_give_the_eager_outputs(facemesh):
    # Under export, PReLU becomes relu and depthwise 1x1 convs and widening shortcuts 1x1 convs.
    crops = torch.rand(2, 3, 192, 192)
    eager = facemesh(crops, taps=TAP_STRIDES)
    with mock.patch("torch.compiler.is_exporting", return_value=True):
        exported = facemesh(crops, taps=TAP_STRIDES)
    assert torch.allclose(exported.mesh, eager.mesh, atol=1e-3, rtol=0)
    for stride in TAP_STRIDES:
        assert torch.allclose(exported.taps[stride], eager.taps[stride], atol=1e-4, rtol=0)


def test_frozen_by_default(facemesh):
    assert not facemesh.training
    assert not any(p.requires_grad for p in facemesh.parameters())


def test_gradients_reach_every_parameter_when_unfrozen():
    model = FaceMesh.from_pretrained(frozen=False)
    out = model(torch.rand(2, 3, 192, 192), taps=[32])
    (out.mesh.square().mean() + out.presence.sum() + out.taps[32].mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bfloat16_agrees_with_float32(facemesh):
    crops = torch.rand(2, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    reference = facemesh(crops).mesh
    bf16 = FaceMesh.from_pretrained().to(torch.bfloat16)
    mesh = bf16(crops.to(torch.bfloat16)).mesh.float()
    assert (mesh - reference).abs().mean() < 2.0  # crop pixels; bf16 keeps ~3 significant digits


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_agrees_with_cpu(facemesh):
    crops = torch.rand(2, 3, 192, 192)
    cuda = FaceMesh.from_pretrained().cuda()
    assert torch.allclose(cuda(crops.cuda()).mesh.cpu(), facemesh(crops).mesh, atol=1e-2)
