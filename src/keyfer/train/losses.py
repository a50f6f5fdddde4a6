"""The NKF training loss with KF regularization by landmark perturbation (docs/method.md,
'KF regularization'), restricted to the classes of each sample's source.

A source that lacks a class (SFEW, TFEID: no contempt) says nothing about it: its samples must
not teach the model that the class is absent. So the logits of the classes outside a sample's
source are set to :data:`MASKED_LOGIT` before the cross-entropy and the consistency KL: those
classes get probability 0, no target mass (label smoothing spreads over the source's classes
only) and exactly zero gradient from that sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from keyfer.train.config import TrainConfig
from keyfer.train.distributed import Shard

MASKED_LOGIT = -1e30
"""The float32 logit of a class outside a sample's source: finite, so that 0 x log p is 0, and
low enough that its probability is exactly 0."""


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """0.5 (KL(p_a || p_b) + KL(p_b || p_a)) of two (B, C) logit sets, batch mean."""
    log_a, log_b = F.log_softmax(logits_a, 1), F.log_softmax(logits_b, 1)
    return 0.5 * (
        F.kl_div(log_a, log_b, log_target=True, reduction="batchmean")
        + F.kl_div(log_b, log_a, log_target=True, reduction="batchmean")
    )


def restricted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor, smoothing: float
) -> torch.Tensor:
    """Batch-mean cross-entropy of (B, C) float32 ``logits`` against (B, C) target
    distributions ``target`` over each row's ``allowed`` classes ((B, C) bool): the others'
    logits are :data:`MASKED_LOGIT`, and ``smoothing`` mixes in the uniform distribution over
    the allowed classes (not over all C)."""
    if smoothing:
        uniform = allowed / allowed.sum(1, keepdim=True)
        target = (1 - smoothing) * target + smoothing * uniform
    log_p = F.log_softmax(logits.masked_fill(~allowed, MASKED_LOGIT), 1)
    return -(target * log_p).sum(1).mean()


def nkf_loss(
    train: TrainConfig,
    logits_for: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    shard: Shard,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of one batch. ``logits_for(moved)`` gives (B, C) logits with the Keypoint
    Features of the samples where the (B,) bool ``moved`` is true taken at perturbed landmarks.

    ``none``: cross-entropy at the clean landmarks. ``augment``: cross-entropy with each sample
    perturbed with probability ``perturb_prob``. ``consistency``: cross-entropy at the perturbed
    landmarks + ``consistency_weight`` x symmetric KL(clean, perturbed). The batch is this
    process's ``shard`` of a global batch; random choices are drawn for the whole global batch.

    ``allowed``: (B, C) bool, the classes of each sample's source; the loss is restricted to
    them (see the module docstring). None, or every class allowed, computes the loss as before
    sources existed, to the bit.
    """
    target = targets if train.label_mode == "probability" else labels
    batch = len(labels)
    mask = None if allowed is None or bool(allowed.all()) else allowed

    def cross_entropy(logits: torch.Tensor) -> torch.Tensor:
        if mask is None:
            return F.cross_entropy(logits, target, label_smoothing=train.label_smoothing)
        distribution = (
            targets.float()
            if train.label_mode == "probability"
            else F.one_hot(labels, mask.shape[1]).float()
        )
        return restricted_cross_entropy(logits, distribution, mask, train.label_smoothing)

    def logits_of(moved: torch.Tensor) -> torch.Tensor:
        logits = logits_for(moved)
        return logits if mask is None else logits.masked_fill(~mask, MASKED_LOGIT)

    if train.regularization == "consistency":
        moved = logits_of(torch.ones(batch, dtype=torch.bool))
        clean = logits_of(torch.zeros(batch, dtype=torch.bool))
        return cross_entropy(moved) + train.consistency_weight * symmetric_kl(clean, moved)
    if train.regularization == "augment":
        return cross_entropy(logits_of(shard.rand(generator) < train.perturb_prob))
    return cross_entropy(logits_of(torch.zeros(batch, dtype=torch.bool)))
