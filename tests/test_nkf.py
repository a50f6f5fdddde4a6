"""The NKF model: Keypoint Features, perturbation, RKFA, head, and the assembled model."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from keyfer.errors import KeyferError
from keyfer.nkf.config import ModelConfig
from keyfer.nkf.keypoint_features import keypoint_feature_channels, sample_keypoint_features
from keyfer.nkf.model import NKFModel, keypoint_indices
from keyfer.nkf.perturbation import perturb_keypoints
from keyfer.nkf.rkfa import RKFA
from keyfer.train.cached import build_head


def test_sampling_at_a_cell_centre_returns_that_cell_exactly():
    taps = {s: torch.randn(2, 8, 192 // s, 192 // s) for s in (4, 8, 16, 32)}
    # Cell (row 3, column 5) of the stride-8 map is centred at crop pixel (5.5 * 8, 3.5 * 8).
    keypoints = torch.tensor([[[5.5 * 8, 3.5 * 8]], [[0.5 * 8, 23.5 * 8]]])
    features = sample_keypoint_features(taps, keypoints, [8])
    assert torch.allclose(features[0, 0], taps[8][0, :, 3, 5], atol=1e-5, rtol=0)
    assert torch.allclose(features[1, 0], taps[8][1, :, 23, 0], atol=1e-5, rtol=0)


def test_sampling_concatenates_taps_in_order_and_is_differentiable():
    taps = {s: torch.randn(1, 4, 192 // s, 192 // s, requires_grad=True) for s in (4, 16)}
    keypoints = (torch.rand(1, 5, 2) * 192).requires_grad_()
    features = sample_keypoint_features(taps, keypoints, [16, 4])
    assert features.shape == (1, 5, 8)
    features.sum().backward()
    assert keypoints.grad.abs().sum() > 0
    assert taps[4].grad.abs().sum() > 0 and taps[16].grad.abs().sum() > 0


def test_export_form_of_sampling_matches_grid_sample():
    taps = {s: torch.randn(3, 4, 192 // s, 192 // s) for s in (4, 8, 16, 32)}
    # Points inside the crop, on its edges and outside it (grid_sample's border padding).
    keypoints = torch.rand(3, 40, 2) * 260 - 30
    keypoints[0, :4] = torch.tensor([[0.0, 0.0], [191.99, 191.99], [96.0, 0.0], [0.0, 96.0]])
    eager = sample_keypoint_features(taps, keypoints, [4, 8, 16, 32])
    with mock.patch("torch.compiler.is_exporting", return_value=True):
        exported = sample_keypoint_features(taps, keypoints, [4, 8, 16, 32])
    assert torch.allclose(exported, eager, atol=1e-5, rtol=0)


def test_keypoint_feature_channels():
    assert keypoint_feature_channels([4, 8, 16, 32]) == 352
    assert keypoint_feature_channels([2, 4, 8, 16, 32]) == 368


def test_perturbation_statistics_scale_with_iod_and_stay_in_the_crop():
    keypoints = torch.full((4000, 68, 2), 96.0)
    iod = torch.full((4000,), 50.0)
    moved = perturb_keypoints(keypoints, iod, 0.05, torch.Generator().manual_seed(0))
    offsets = moved - keypoints
    assert offsets.mean().abs() < 0.02
    assert offsets.std().item() == pytest.approx(0.05 * 50, rel=0.02)
    edge = perturb_keypoints(torch.zeros(10, 68, 2), torch.full((10,), 400.0), 0.5)
    assert edge.min() >= 0 and edge.max() < 192


@pytest.mark.parametrize("form", ["keypoint", "both"])
def test_rkfa_weights_are_in_zero_one_and_depend_on_the_representative(form):
    rkfa = RKFA(dim=16, representative=2, form=form)
    tokens = torch.randn(3, 10, 16)  # LayerNorm-scale tokens, as the head feeds RKFA
    out, weights = rkfa(tokens)
    assert out.shape == tokens.shape and weights.shape == (3, 10)
    assert ((weights > 0) & (weights < 1)).all()
    changed = tokens.clone()
    changed[:, 2] += 1.0
    assert not torch.allclose(rkfa(changed)[1], weights)


def test_rkfa_forms_without_keypoint_weights():
    assert RKFA(8, 0, "channel")(torch.randn(2, 4, 8))[1] is None
    tokens = torch.randn(2, 4, 8)
    assert torch.equal(RKFA(8, 0, "none")(tokens)[0], tokens)
    with pytest.raises(ValueError):
        RKFA(8, 0, "spatial")


def test_bad_model_configs_are_clear_errors():
    with pytest.raises(KeyferError, match="rkfa"):
        ModelConfig(rkfa="global")
    with pytest.raises(KeyferError, match="taps"):
        ModelConfig(taps=[3])
    with pytest.raises(KeyferError, match="both be off"):
        ModelConfig(use_keypoint_features=False, use_global=False)
    with pytest.raises(KeyferError, match="nasal base"):
        keypoint_indices([1, 3, 5])


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(),
        ModelConfig(keypoints="mesh468", dim=8, rkfa="both", head="attention"),
        ModelConfig(use_keypoint_features=False),
        ModelConfig(use_global=False, head="mean", rkfa="channel", taps=[2, 32]),
    ],
    ids=["default", "mesh468-both-attention", "global-only", "kf-only-mean"],
)
def test_model_shapes(config):
    model = NKFModel(config)
    out = model(torch.rand(2, 3, 192, 192))
    assert out.logits.shape == (2, 8)
    assert out.mesh.shape == (2, 468, 3) and out.presence.shape == (2,)
    expected_k = len(keypoint_indices(config.keypoints))
    if config.use_keypoint_features and config.rkfa in ("keypoint", "both"):
        assert out.importance.shape == (2, expected_k)


def test_gradients_reach_the_head_and_facemesh_only_when_unfrozen():
    frozen = NKFModel(ModelConfig()).train()
    F.cross_entropy(frozen(torch.rand(2, 3, 192, 192)).logits, torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in frozen.head.parameters())
    assert all(p.grad is None for p in frozen.facemesh.parameters())
    assert not frozen.facemesh.training

    tuned = NKFModel(ModelConfig(finetune_alignment=True)).train()
    F.cross_entropy(tuned(torch.rand(2, 3, 192, 192)).logits, torch.tensor([0, 1])).backward()
    assert tuned.facemesh.stem.weight.grad.abs().sum() > 0


def test_head_overfits_a_tiny_batch():
    torch.manual_seed(0)
    head = build_head(ModelConfig(dim=16, hidden=64, dropout=0.0))
    kf, global_feature = torch.randn(16, 68, 352), torch.randn(16, 128)
    labels = torch.arange(16) % 8
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(head(kf, global_feature).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (head(kf, global_feature).logits.argmax(1) == labels).all()
