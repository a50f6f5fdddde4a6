"""The assembled NKF model: FaceMesh -> keypoints -> Keypoint Features -> head (docs/method.md)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from keyfer.errors import KeyferError
from keyfer.faces.facemesh import TAP_CHANNELS, FaceMesh
from keyfer.faces.ibug68 import MESH_TO_IBUG68, ibug68, inter_ocular_distance
from keyfer.models.info import ModelInfo
from keyfer.nkf.appearance import (
    GLOBAL_CHANNELS as APPEARANCE_GLOBAL_CHANNELS,
)
from keyfer.nkf.appearance import (
    AppearanceBranch,
    AppearanceFeatures,
    appearance_channels,
)
from keyfer.nkf.config import ModelConfig
from keyfer.nkf.head import HeadOutput, NKFHead
from keyfer.nkf.keypoint_features import keypoint_feature_channels, sample_keypoint_features

NASAL_BASE_VERTEX = 2  # the subnasale in the mesh; iBUG point 34
GLOBAL_TAP = 32


def keypoint_indices(keypoints: str | list[int]) -> list[int]:
    """Mesh vertex indices of a keypoint set (``ibug68``, ``mesh468`` or an explicit list)."""
    if keypoints == "ibug68":
        return list(MESH_TO_IBUG68)
    if keypoints == "mesh468":
        return list(range(468))
    if isinstance(keypoints, str):
        raise KeyferError(f"unknown keypoint set {keypoints!r}; use ibug68, mesh468 or a list")
    if NASAL_BASE_VERTEX not in keypoints:
        raise KeyferError("a custom keypoint list must include the nasal base (mesh vertex 2)")
    return list(keypoints)


def head_channels(config: ModelConfig) -> tuple[int, int]:
    """(channels of each keypoint token, channels of the global feature) the head receives:
    FaceMesh's, then the appearance branch's where the config joins them (see :func:`fuse`)."""
    keypoint = keypoint_feature_channels(config.taps)
    global_ = TAP_CHANNELS[GLOBAL_TAP]
    if config.appearance in ("keypoints", "both"):
        keypoint += appearance_channels(config.appearance_taps)
    if config.appearance in ("global", "both"):
        replace = config.appearance_global == "replace"
        global_ = APPEARANCE_GLOBAL_CHANNELS + (0 if replace else global_)
    return keypoint, global_


def fuse(
    config: ModelConfig,
    keypoint_features: torch.Tensor,
    global_feature: torch.Tensor,
    appearance_keypoint_features: torch.Tensor | None,
    appearance_global: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's input: FaceMesh's (B, K, C) tokens and (B, G) global feature, joined by the
    appearance branch's (B, K, Ca) and (B, 256) as ``config.appearance`` says (channels
    concatenated, FaceMesh first; see :func:`head_channels`)."""
    if config.appearance in ("keypoints", "both"):
        appearance_tokens = _needed(appearance_keypoint_features, config.appearance)
        keypoint_features = torch.cat([keypoint_features, appearance_tokens], -1)
    if config.appearance in ("global", "both"):
        appearance_feature = _needed(appearance_global, config.appearance)
        if config.appearance_global == "replace":
            global_feature = appearance_feature
        else:
            global_feature = torch.cat([global_feature, appearance_feature], -1)
    return keypoint_features, global_feature


def _needed(features: torch.Tensor | None, appearance: str) -> torch.Tensor:
    """The appearance branch's ``features``, which the model's ``appearance`` setting uses."""
    if features is None:
        raise KeyferError(f"appearance {appearance!r} needs the appearance branch's features")
    return features


class Features(NamedTuple):
    """What the head needs from FaceMesh for (B, 3, 192, 192) crops: ``keypoint_features``
    (B, K, C), ``global_feature`` (B, 128), ``keypoints`` (B, K, 2) crop pixels, ``iod`` (B,),
    ``mesh`` (B, 468, 3) crop pixels (differentiable when FaceMesh is trained), ``presence`` (B,),
    ``taps`` {stride: map}, ``appearance`` the appearance branch's features or None."""

    keypoint_features: torch.Tensor
    global_feature: torch.Tensor
    keypoints: torch.Tensor
    iod: torch.Tensor
    mesh: torch.Tensor
    presence: torch.Tensor
    taps: dict[int, torch.Tensor]
    appearance: AppearanceFeatures | None = None


class NKFOutput(NamedTuple):
    """``logits`` (B, n_classes), ``importance`` (B, K) or None, ``mesh`` (B, 468, 3) and
    ``presence`` (B,), all for aligned crops."""

    logits: torch.Tensor
    importance: torch.Tensor | None
    mesh: torch.Tensor
    presence: torch.Tensor


class NKFModel(nn.Module):
    """Keypoint-Feature expression model on FaceMesh. Input: (B, 3, 192, 192) crops in [0, 1],
    already in the model's colour mode (see :mod:`keyfer.preprocessing`). A model loaded by
    :func:`keyfer.create_model` describes itself in :attr:`info`."""

    keypoint_index: torch.Tensor  # (K,) mesh vertex indices of the keypoints, a buffer

    def __init__(self, config: ModelConfig, pretrained_alignment: bool = True) -> None:
        super().__init__()
        self.config = config
        self._info: ModelInfo | None = None
        self.facemesh = FaceMesh.from_pretrained(frozen=not config.finetune_alignment)
        if not pretrained_alignment:
            self.facemesh = FaceMesh().requires_grad_(config.finetune_alignment)
        indices = keypoint_indices(config.keypoints)
        self.register_buffer("keypoint_index", torch.tensor(indices), persistent=False)
        self.appearance = None
        if config.appearance != "none":
            frozen = not config.finetune_appearance
            self.appearance = AppearanceBranch(config.appearance_taps, frozen=frozen)
        kf_channels, global_channels = head_channels(config)
        self.head = NKFHead(
            config,
            kf_channels=kf_channels,
            global_channels=global_channels,
            num_keypoints=len(indices),
            representative=indices.index(NASAL_BASE_VERTEX),
        )

    @property
    def info(self) -> ModelInfo:
        """Its classes, temperature and preprocessing; a model built from a bare config (being
        trained) has none until its trainer gives it one."""
        if self._info is None:
            raise KeyferError(
                "this model does not describe itself (built from a bare config); "
                "load it with keyfer.create_model(name or checkpoint)"
            )
        return self._info

    @info.setter
    def info(self, info: ModelInfo) -> None:
        info.check(self.config)
        self._info = info

    def train(self, mode: bool = True) -> NKFModel:
        super().train(mode)
        if not self.config.finetune_alignment:
            self.facemesh.eval()  # a frozen alignment network stays in inference mode
        if self.appearance is not None and not self.config.finetune_appearance:
            self.appearance.eval()
        return self

    def features(self, crops: torch.Tensor) -> Features:
        """Run FaceMesh and sample the Keypoint Features at its own (detached) landmarks; with
        an appearance branch, run it on the chip those landmarks align and sample it there too."""
        taps = sorted(set(self.config.taps) | {GLOBAL_TAP})
        out = self.facemesh(crops, taps=taps)
        mesh = out.mesh.detach()  # landmarks are coordinates, not a path for the class loss
        keypoints = mesh[:, self.keypoint_index, :2]
        appearance = None
        if self.appearance is not None:
            appearance = self.appearance(crops, ibug68(mesh[..., :2]), keypoints)
        return Features(
            keypoint_features=sample_keypoint_features(out.taps, keypoints, self.config.taps),
            global_feature=out.taps[GLOBAL_TAP].mean(dim=(2, 3)),
            keypoints=keypoints,
            iod=inter_ocular_distance(mesh[:, list(MESH_TO_IBUG68), :2]),
            mesh=out.mesh,
            presence=out.presence,
            taps=out.taps,
            appearance=appearance,
        )

    def classify(self, features: Features, keypoints: torch.Tensor | None = None) -> HeadOutput:
        """The head on ``features``; with ``keypoints`` (B, K, 2) crop pixels (e.g. perturbed
        landmarks), the Keypoint Features (FaceMesh's and the appearance branch's) are re-sampled
        from the taps there instead of taken at FaceMesh's own landmarks, without running the
        networks again."""
        if keypoints is None:
            keypoint_features = features.keypoint_features
        else:
            keypoint_features = sample_keypoint_features(features.taps, keypoints, self.config.taps)
        appearance_features = None
        if self.appearance is not None and features.appearance is not None:
            appearance = features.appearance
            appearance_features = (
                appearance.keypoint_features
                if keypoints is None
                else self.appearance.sample(appearance, keypoints)
            )
            appearance_global = appearance.global_feature
        else:
            appearance_global = None
        return self.head(
            *fuse(
                self.config,
                keypoint_features,
                features.global_feature,
                appearance_features,
                appearance_global,
            )
        )

    def forward(self, crops: torch.Tensor) -> NKFOutput:
        features = self.features(crops)
        logits, importance = self.classify(features)
        return NKFOutput(logits, importance, features.mesh, features.presence)
