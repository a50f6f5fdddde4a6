"""Representative Keypoint Feature Attention (RKFA): the nasal-base token weights all tokens."""

from __future__ import annotations

import math

import torch
from torch import nn

RKFA_FORMS = ("none", "channel", "keypoint", "both")


class RKFA(nn.Module):
    """Emphasise keypoint tokens with the representative token r = tokens[:, representative].

    - ``channel``: g = sigmoid(MLP(r)) (B, d); token_i <- token_i * (1 + g).
    - ``keypoint``: w_i = sigmoid(<Wq r, Wk token_i> / sqrt(d)) (B, K);
      token_i <- token_i * (1 + w_i).
    - ``both``: channel then keypoint. ``none``: identity.
    ``forward`` takes (B, K, d) tokens and returns them reweighted with the per-keypoint weights
    (B, K) in (0, 1), or ``None`` for forms without them.
    """

    def __init__(self, dim: int, representative: int, form: str = "keypoint") -> None:
        super().__init__()
        if form not in RKFA_FORMS:
            raise ValueError(f"unknown RKFA form {form!r}; choose from {RKFA_FORMS}")
        self.form = form
        self.representative = representative
        if form in ("channel", "both"):
            self.channel_gate = nn.Sequential(
                nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, dim)
            )
        if form in ("keypoint", "both"):
            self.query = nn.Linear(dim, dim, bias=False)
            self.key = nn.Linear(dim, dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        r = tokens[:, self.representative]
        weights = None
        if self.form in ("channel", "both"):
            tokens = tokens * (1 + torch.sigmoid(self.channel_gate(r)))[:, None, :]
        if self.form in ("keypoint", "both"):
            scores = (self.key(tokens) @ self.query(r).unsqueeze(-1)).squeeze(-1)
            weights = torch.sigmoid(scores / math.sqrt(tokens.shape[-1]))
            tokens = tokens * (1 + weights).unsqueeze(-1)
        return tokens, weights
