"""The NKF head: project Keypoint Features to tokens, apply RKFA, pool, classify."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from keyfer.nkf.config import ModelConfig
from keyfer.nkf.rkfa import RKFA


class HeadOutput(NamedTuple):
    """``logits`` (B, n_classes); ``importance`` (B, K) RKFA keypoint weights in (0, 1), or None
    when the RKFA form has none."""

    logits: torch.Tensor
    importance: torch.Tensor | None


class NKFHead(nn.Module):
    """Keypoint Features (B, K, C) and a global feature (B, G) -> logits.

    Tokens: a shared Linear(C, d) + LayerNorm, plus a learned embedding per keypoint index, then
    RKFA driven by token ``representative``. Pooling keeps identity by concatenation (default),
    or takes the mean, or an attention-weighted sum. The MLP has one hidden GELU layer.
    """

    def __init__(
        self,
        config: ModelConfig,
        kf_channels: int,
        global_channels: int,
        num_keypoints: int,
        representative: int,
    ) -> None:
        super().__init__()
        self.config = config
        features = global_channels if config.use_global else 0
        if config.use_global:
            self.global_norm = nn.LayerNorm(global_channels)
        if config.use_keypoint_features:
            self.project = nn.Sequential(
                nn.Linear(kf_channels, config.dim), nn.LayerNorm(config.dim)
            )
            self.identity = nn.Parameter(torch.randn(num_keypoints, config.dim) * 0.02)
            self.rkfa = RKFA(config.dim, representative, config.rkfa)
            if config.head == "attention":
                self.pool_query = nn.Linear(config.dim, 1)
            features += config.dim * (num_keypoints if config.head == "concat" else 1)
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(features, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )

    def output_keys(self) -> set[str]:
        """State-dict keys of the output layer: the classifier's last Linear, one row per class
        (what a new classifier for another dataset re-initialises)."""
        last = len(self.classifier) - 1
        return {f"classifier.{last}.{name}" for name, _ in self.classifier[last].named_parameters()}

    def forward(self, keypoint_features: torch.Tensor, global_feature: torch.Tensor) -> HeadOutput:
        parts, importance = [], None
        if self.config.use_keypoint_features:
            tokens = self.project(keypoint_features) + self.identity
            tokens, importance = self.rkfa(tokens)
            if self.config.head == "concat":
                parts.append(tokens.flatten(1))
            elif self.config.head == "mean":
                parts.append(tokens.mean(1))
            else:
                attention = torch.softmax(self.pool_query(tokens).squeeze(-1), dim=1)
                parts.append((attention.unsqueeze(-1) * tokens).sum(1))
        if self.config.use_global:
            parts.append(self.global_norm(global_feature))
        return HeadOutput(self.classifier(torch.cat(parts, dim=1)), importance)
