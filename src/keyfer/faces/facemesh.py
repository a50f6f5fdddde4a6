"""MediaPipe FaceMesh (``face_landmark.tflite``) as an eager PyTorch module with feature taps.

Input: aligned face crops (B, 3, 192, 192), RGB in [0, 1].
Coordinates: crop pixels, a pixel's centre at integer + 0.5, the crop spanning [0, 192).
A tap at stride ``s`` is a (B, C, 192/s, 192/s) map whose cell (i, j) covers crop pixels
[s*j, s*(j+1)) x [s*i, s*(i+1)), so a crop point x maps to feature coordinate x / s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from keyfer.faces.blocks import PReLU, ResidualBlock, SameConv2d
from keyfer.faces.weights import load_weights

CROP_SIZE = 192
NUM_MESH_POINTS = 468
TAP_STRIDES = (2, 4, 8, 16, 32)
TAP_CHANNELS = {2: 16, 4: 32, 8: 64, 16: 128, 32: 128}

# (in, out, stride) of the trunk blocks; a tap is taken after the last block of each resolution.
_TRUNK = [
    (16, 16, 1), (16, 16, 1),
    (16, 32, 2), (32, 32, 1), (32, 32, 1),
    (32, 64, 2), (64, 64, 1), (64, 64, 1),
    (64, 128, 2), (128, 128, 1), (128, 128, 1),
    (128, 128, 2), (128, 128, 1), (128, 128, 1),
]  # fmt: skip
_TAP_AFTER_BLOCK = {1: 2, 4: 4, 7: 8, 10: 16, 13: 32}


class FaceMeshOutput(NamedTuple):
    """``mesh`` (B, 468, 3) in crop pixels (z in the x pixel scale), ``presence`` (B,) in [0, 1],
    and ``taps`` {stride: (B, C, 192/stride, 192/stride)} for the strides that were asked for."""

    mesh: torch.Tensor
    presence: torch.Tensor
    taps: dict[int, torch.Tensor]


class _Head(nn.Module):
    """A branch after the stride-32 trunk: downsampling blocks, a 1x1 reduction, one more block,
    and a 3x3 valid convolution on the 3x3 map that gives a (B, out, 1, 1) vector."""

    def __init__(self, n_blocks: int, reduced: int, out_features: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[ResidualBlock(128, 128, 2 if i == 0 else 1, PReLU(128)) for i in range(n_blocks)]
        )
        self.reduce = nn.Conv2d(128, reduced, 1)
        self.reduce_act = PReLU(reduced)
        self.refine = ResidualBlock(reduced, reduced, 1, PReLU(reduced))
        self.out = nn.Conv2d(reduced, out_features, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.refine(self.reduce_act(self.reduce(self.blocks(x))))
        # A valid conv over the whole 3x3 map is a linear layer on the flattened map.
        return F.linear(x.flatten(1), self.out.weight.flatten(1), self.out.bias)


class FaceMesh(nn.Module):
    """The FaceMesh network: 468 3-D landmarks and a face-presence score, with optional taps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = SameConv2d(3, 16, 3, 2, CROP_SIZE)
        self.stem_act = PReLU(16)
        self.trunk = nn.ModuleList(ResidualBlock(i, o, s, PReLU(o)) for i, o, s in _TRUNK)
        self.mesh_head = _Head(n_blocks=3, reduced=32, out_features=NUM_MESH_POINTS * 3)
        self.presence_head = _Head(n_blocks=1, reduced=32, out_features=1)

    @classmethod
    def from_pretrained(cls, frozen: bool = True) -> FaceMesh:
        """The network with MediaPipe's weights. Frozen means eval mode and no gradients."""
        model = cls()
        model.load_state_dict(load_weights("facemesh"))
        if frozen:
            model.requires_grad_(False).eval()
        return model

    def forward(self, crops: torch.Tensor, taps: Iterable[int] = ()) -> FaceMeshOutput:
        """Run on (B, 3, 192, 192) RGB crops in [0, 1]; ``taps`` selects strides from 2..32."""
        wanted = set(taps)
        unknown = wanted - set(TAP_STRIDES)
        if unknown:
            raise ValueError(f"unknown tap strides {sorted(unknown)}; choose from {TAP_STRIDES}")
        # Channels-last is much faster for depthwise and 1x1 convs on CPU; outputs keep values.
        x = self.stem_act(self.stem(crops.contiguous(memory_format=torch.channels_last)))
        features: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.trunk):
            x = block(x)
            stride = _TAP_AFTER_BLOCK.get(index)
            if stride in wanted:
                features[stride] = x
        mesh = self.mesh_head(x).view(-1, NUM_MESH_POINTS, 3)
        presence = torch.sigmoid(self.presence_head(x).squeeze(1))
        return FaceMeshOutput(mesh, presence, features)
