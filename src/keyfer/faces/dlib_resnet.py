"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as an eager module.

This is ``anet_type`` of dlib's ``dnn_face_recognition_ex.cpp``: a 7x7 stem and 14 residual blocks
in five levels (dlib names them alevel4 .. alevel0 in forward order), global average pooling and a
128-d linear projection without bias. Batch norm is folded into per-channel affine layers.

Input: aligned 150x150 face chips (B, 3, 150, 150), RGB in [0, 255] (uint8 or float), cut the
way ``dlib.get_face_chip`` cuts them (see :mod:`keyfer.faces.dlib_align`). dlib normalises each
channel as ``(value - mean) / 256`` with the per-channel means of :data:`INPUT_MEAN`.
Output: dlib's 128-d descriptor exactly as dlib returns it, not L2-normalised (norms of 1.3 to
1.6 on real faces); dlib calls two faces the same person below a Euclidean distance of 0.6.

Taps: the map after each stage, by name (see :data:`TAPS`). Convolutions and pools are unpadded
where they downsample, so the maps are not aligned like a "same" padded network's: the cell
centres of every tap follow ``x = stride * f + TAP_OFFSET`` in chip pixels, where ``f`` is the
feature coordinate (cell ``i`` spans [i, i+1)), taking each cell's centre on the shortcut path.
Use :func:`tap_coordinates` to map chip points onto a tap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from keyfer.faces.weights import load_weights

CHIP_SIZE = 150
EMBEDDING_DIM = 128
INPUT_MEAN = (122.782, 117.001, 104.298)  # dlib's input_rgb_image_sized avg_red/green/blue
INPUT_SCALE = 256.0
TAP_OFFSET = 3.5


class Level(NamedTuple):
    """One residual level: its name, channels, number of blocks and whether the first block
    halves the resolution (a stride-2 conv; the shortcut is a 2x2 average pool)."""

    name: str
    channels: int
    blocks: int
    downsample: bool


class TapSpec(NamedTuple):
    """A tap's ``channels``, square ``size`` (cells per side) and ``stride`` in chip pixels."""

    channels: int
    size: int
    stride: int


STEM_CHANNELS = 32
LEVELS = (
    Level("level4", 32, 3, False),
    Level("level3", 64, 4, True),
    Level("level2", 128, 3, True),
    Level("level1", 256, 3, True),
    Level("level0", 256, 1, True),
)
TAPS = {
    "stem": TapSpec(32, 35, 4),
    "level4": TapSpec(32, 35, 4),
    "level3": TapSpec(64, 17, 8),
    "level2": TapSpec(128, 8, 16),
    "level1": TapSpec(256, 4, 32),
    "level0": TapSpec(256, 2, 64),
}


class DlibResNetOutput(NamedTuple):
    """``embedding`` (B, 128), dlib's descriptor; ``taps`` {name: (B, C, size, size)} for the
    names that were asked for (see :data:`TAPS`)."""

    embedding: torch.Tensor
    taps: dict[str, torch.Tensor]


class Affine(nn.Module):
    """dlib's ``affine`` layer in CONV_MODE: ``x * weight[c] + bias[c]`` (test-time batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias[:, None, None], x, self.weight[:, None, None])


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev`` for tensors of different shapes: the sum is as large as the larger of
    the two in every dimension and each is zero-padded at the end of its channels, rows and
    columns. Besides channels, it pads where level1's 3x3 residual meets its 4x4 pooled shortcut
    and level0's 1x1 residual meets its 2x2 one."""
    if a.shape == b.shape:
        return a + b
    (_, ca, ha, wa), (_, cb, hb, wb) = a.shape, b.shape
    c, h, w = max(ca, cb), max(ha, hb), max(wa, wb)
    a = F.pad(a, (0, w - wa, 0, h - ha, 0, c - ca))
    return a + F.pad(b, (0, w - wb, 0, h - hb, 0, c - cb))


class DlibBlock(nn.Module):
    """dlib's ``ares`` / ``ares_down``: relu(affine(conv(relu(affine(conv(x))))) + shortcut(x)).

    Downsampling blocks use an unpadded stride-2 conv and a 2x2 average-pooled shortcut whose
    missing channels (and, at level1 and level0, the residual's missing rows and columns) count
    as zeros.
    """

    def __init__(self, in_channels: int, channels: int, downsample: bool) -> None:
        super().__init__()
        stride, padding = (2, 0) if downsample else (1, 1)
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding)
        self.affine1 = Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.affine2 = Affine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2) if self.downsample else x
        return F.relu(_add_zero_padded(residual, shortcut))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet: 128-d descriptors of 150x150 chips, with optional taps."""

    mean: torch.Tensor  # (1, 3, 1, 1) dlib's input mean, a buffer

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.stem_conv = nn.Conv2d(3, STEM_CHANNELS, 7, 2, 0)
        self.stem_affine = Affine(STEM_CHANNELS)
        in_channels = STEM_CHANNELS
        for level in LEVELS:
            blocks = []
            for i in range(level.blocks):
                down = level.downsample and i == 0
                blocks.append(DlibBlock(in_channels, level.channels, down))
                in_channels = level.channels
            self.add_module(level.name, nn.Sequential(*blocks))
        self.fc = nn.Linear(in_channels, EMBEDDING_DIM, bias=False)

    @classmethod
    def from_pretrained(cls, frozen: bool = True) -> DlibResNet:
        """The network with dlib's weights (shipped as fp16, computed in fp32). Frozen means eval
        mode and no gradients. Nothing is downloaded."""
        model = cls()
        model.load_state_dict(load_weights("dlib_resnet"))
        if frozen:
            model.requires_grad_(False).eval()
        return model

    def forward(self, chips: torch.Tensor, taps: Iterable[str] = ()) -> DlibResNetOutput:
        """Run on (B, 3, 150, 150) RGB chips in [0, 255]; ``taps`` selects names of :data:`TAPS`."""
        wanted = set(taps)
        unknown = wanted - set(TAPS)
        if unknown:
            raise ValueError(f"unknown taps {sorted(unknown)}; choose from {list(TAPS)}")
        if chips.shape[1:] != (3, CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected (B, 3, 150, 150) chips, got {tuple(chips.shape)}")
        x = (chips.float() - self.mean) / INPUT_SCALE
        x = F.max_pool2d(F.relu(self.stem_affine(self.stem_conv(x))), 3, 2)
        features = {"stem": x} if "stem" in wanted else {}
        return self.levels_after("stem", x, wanted, features)

    def levels_after(
        self,
        tap: str,
        x: torch.Tensor,
        taps: Iterable[str] = (),
        features: dict[str, torch.Tensor] | None = None,
    ) -> DlibResNetOutput:
        """Run the levels after tap ``tap`` on its map ``x`` (B, C, size, size) (e.g. a cached
        level3 map, to train the levels above it); ``taps`` as in :meth:`forward`, added to
        ``features``."""
        names = list(TAPS)
        if tap not in names:
            raise ValueError(f"unknown tap {tap!r}; choose from {names}")
        features = {} if features is None else features
        for level in LEVELS[names.index(tap) :]:  # TAPS: the stem, then each level
            x = getattr(self, level.name)(x)
            if level.name in taps:
                features[level.name] = x
        return DlibResNetOutput(self.fc(x.mean(dim=(2, 3))), features)


def tap_coordinates(points: torch.Tensor, name: str) -> torch.Tensor:
    """Map chip points (..., 2) in pixels (a pixel's centre at integer + 0.5) to the feature
    coordinates of tap ``name`` (cell ``i`` spans [i, i + 1)); see the module docstring."""
    return (points - TAP_OFFSET) / TAPS[name].stride
