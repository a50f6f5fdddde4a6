"""The NKF training loss with KF regularization by landmark perturbation (docs/method.md,
'KF regularization')."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from keyfer.train.config import TrainConfig
from keyfer.train.distributed import Shard


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """0.5 (KL(p_a || p_b) + KL(p_b || p_a)) of two (B, C) logit sets, batch mean."""
    log_a, log_b = F.log_softmax(logits_a, 1), F.log_softmax(logits_b, 1)
    return 0.5 * (
        F.kl_div(log_a, log_b, log_target=True, reduction="batchmean")
        + F.kl_div(log_b, log_a, log_target=True, reduction="batchmean")
    )


def nkf_loss(
    train: TrainConfig,
    logits_for: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    shard: Shard,
) -> torch.Tensor:
    """The loss of one batch. ``logits_for(moved)`` gives (B, C) logits with the Keypoint
    Features of the samples where the (B,) bool ``moved`` is true taken at perturbed landmarks.

    ``none``: cross-entropy at the clean landmarks. ``augment``: cross-entropy with each sample
    perturbed with probability ``perturb_prob``. ``consistency``: cross-entropy at the perturbed
    landmarks + ``consistency_weight`` x symmetric KL(clean, perturbed). The batch is this
    process's ``shard`` of a global batch; random choices are drawn for the whole global batch.
    """
    target = targets if train.label_mode == "probability" else labels
    batch = len(labels)

    def cross_entropy(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, label_smoothing=train.label_smoothing)

    if train.regularization == "consistency":
        moved = logits_for(torch.ones(batch, dtype=torch.bool))
        clean = logits_for(torch.zeros(batch, dtype=torch.bool))
        return cross_entropy(moved) + train.consistency_weight * symmetric_kl(clean, moved)
    if train.regularization == "augment":
        return cross_entropy(logits_for(shard.rand(generator) < train.perturb_prob))
    return cross_entropy(logits_for(torch.zeros(batch, dtype=torch.bool)))
