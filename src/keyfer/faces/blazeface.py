"""MediaPipe BlazeFace short-range (``face_detection_short_range.tflite``) as a PyTorch module.

Input: (B, 3, 128, 128) RGB in [-1, 1]. Output: raw regressors (B, 896, 16) and logits (B, 896)
in the anchor order of :func:`keyfer.faces.anchors.short_range_anchors`. Decoding lives in
:mod:`keyfer.faces.detector`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from keyfer.faces.blocks import ResidualBlock, SameConv2d
from keyfer.faces.weights import load_weights

INPUT_SIZE = 128

_BLOCKS = [
    (24, 24, 1), (24, 28, 1), (28, 32, 2), (32, 36, 1), (36, 42, 1), (42, 48, 2),
    (48, 56, 1), (56, 64, 1), (64, 72, 1), (72, 80, 1), (80, 88, 1),
    (88, 96, 2), (96, 96, 1), (96, 96, 1), (96, 96, 1), (96, 96, 1),
]  # fmt: skip
_STRIDE8_OUTPUT = 10  # index of the block whose 16x16 output feeds the stride-8 anchors


class BlazeFace(nn.Module):
    """The BlazeFace short-range network: 2 anchors per 16x16 cell, 6 per 8x8 cell."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = SameConv2d(3, 24, 5, 2, INPUT_SIZE)
        self.blocks = nn.ModuleList(
            ResidualBlock(i, o, s, nn.ReLU(inplace=True)) for i, o, s in _BLOCKS
        )
        self.classifier_8 = nn.Conv2d(88, 2, 1)
        self.regressor_8 = nn.Conv2d(88, 32, 1)
        self.classifier_16 = nn.Conv2d(96, 6, 1)
        self.regressor_16 = nn.Conv2d(96, 96, 1)

    @classmethod
    def from_pretrained(cls) -> BlazeFace:
        """The network with MediaPipe's weights, frozen and in eval mode."""
        model = cls()
        model.load_state_dict(load_weights("blazeface_short_range"))
        return model.requires_grad_(False).eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 128, 128) in [-1, 1] -> regressors (B, 896, 16), score logits (B, 896)."""
        # Channels-last is much faster for depthwise and 1x1 convs on CPU; outputs keep values.
        x = F.relu(self.stem(images.contiguous(memory_format=torch.channels_last)))
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index == _STRIDE8_OUTPUT:
                x8 = x
        batch = images.shape[0]

        def flat(t: torch.Tensor, width: int) -> torch.Tensor:
            # TFLite reshapes NHWC, so anchors run over y, then x, then the anchors of a cell.
            return t.permute(0, 2, 3, 1).reshape(batch, -1, width)

        regressors = torch.cat(
            [flat(self.regressor_8(x8), 16), flat(self.regressor_16(x), 16)], dim=1
        )
        logits = torch.cat([flat(self.classifier_8(x8), 1), flat(self.classifier_16(x), 1)], dim=1)
        return regressors, logits.squeeze(-1)
