"""The assembled NKF model: FaceMesh -> keypoints -> Keypoint Features -> head (METHOD §3)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from keyfer.errors import KeyferError
from keyfer.faces.facemesh import TAP_CHANNELS, FaceMesh
from keyfer.faces.ibug68 import MESH_TO_IBUG68, inter_ocular_distance
from keyfer.nkf.config import ModelConfig
from keyfer.nkf.head import NKFHead
from keyfer.nkf.keypoint_features import keypoint_feature_channels, sample_keypoint_features

NASAL_BASE_VERTEX = 2  # the subnasale in the mesh; iBUG point 34
GLOBAL_TAP = 32


def keypoint_indices(keypoints: str | list[int]) -> list[int]:
    """Mesh vertex indices of a keypoint set (``ibug68``, ``mesh468`` or an explicit list)."""
    if keypoints == "ibug68":
        return list(MESH_TO_IBUG68)
    if keypoints == "mesh468":
        return list(range(468))
    if NASAL_BASE_VERTEX not in keypoints:
        raise KeyferError("a custom keypoint list must include the nasal base (mesh vertex 2)")
    return list(keypoints)


class Features(NamedTuple):
    """What the head needs from FaceMesh for (B, 3, 192, 192) crops: ``keypoint_features``
    (B, K, C), ``global_feature`` (B, 128), ``keypoints`` (B, K, 2) crop pixels, ``iod`` (B,),
    ``mesh`` (B, 468, 3) crop pixels (differentiable when FaceMesh is trained), ``presence`` (B,),
    ``taps`` {stride: map}."""

    keypoint_features: torch.Tensor
    global_feature: torch.Tensor
    keypoints: torch.Tensor
    iod: torch.Tensor
    mesh: torch.Tensor
    presence: torch.Tensor
    taps: dict[int, torch.Tensor]


class NKFOutput(NamedTuple):
    """``logits`` (B, n_classes), ``importance`` (B, K) or None, ``mesh`` (B, 468, 3) and
    ``presence`` (B,), all for aligned crops."""

    logits: torch.Tensor
    importance: torch.Tensor | None
    mesh: torch.Tensor
    presence: torch.Tensor


class NKFModel(nn.Module):
    """Keypoint-Feature expression model on FaceMesh. Input: (B, 3, 192, 192) crops in [0, 1],
    already in the model's colour mode (see :mod:`keyfer.data.precrop`)."""

    def __init__(self, config: ModelConfig, pretrained_alignment: bool = True) -> None:
        super().__init__()
        self.config = config
        self.facemesh = FaceMesh.from_pretrained(frozen=not config.finetune_alignment)
        if not pretrained_alignment:
            self.facemesh = FaceMesh().requires_grad_(config.finetune_alignment)
        indices = keypoint_indices(config.keypoints)
        self.register_buffer("keypoint_index", torch.tensor(indices), persistent=False)
        self.head = NKFHead(
            config,
            kf_channels=keypoint_feature_channels(config.taps),
            global_channels=TAP_CHANNELS[GLOBAL_TAP],
            num_keypoints=len(indices),
            representative=indices.index(NASAL_BASE_VERTEX),
        )

    def train(self, mode: bool = True) -> NKFModel:
        super().train(mode)
        if not self.config.finetune_alignment:
            self.facemesh.eval()  # a frozen alignment network stays in inference mode
        return self

    def features(self, crops: torch.Tensor) -> Features:
        """Run FaceMesh and sample the Keypoint Features at its own (detached) landmarks."""
        taps = sorted(set(self.config.taps) | {GLOBAL_TAP})
        out = self.facemesh(crops, taps=taps)
        mesh = out.mesh.detach()  # landmarks are coordinates, not a path for the class loss
        keypoints = mesh[:, self.keypoint_index, :2]
        return Features(
            keypoint_features=sample_keypoint_features(out.taps, keypoints, self.config.taps),
            global_feature=out.taps[GLOBAL_TAP].mean(dim=(2, 3)),
            keypoints=keypoints,
            iod=inter_ocular_distance(mesh[:, list(MESH_TO_IBUG68), :2]),
            mesh=out.mesh,
            presence=out.presence,
            taps=out.taps,
        )

    def forward(self, crops: torch.Tensor) -> NKFOutput:
        features = self.features(crops)
        logits, importance = self.head(features.keypoint_features, features.global_feature)
        return NKFOutput(logits, importance, features.mesh, features.presence)
