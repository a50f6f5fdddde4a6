"""Class-balanced sampling weights (docs/method.md, 'Training'), shared by both training engines.

Drawing each sample with probability proportional to 1 / (its class's count) draws every class
present equally often in expectation; an epoch is as many draws, with replacement, as there are
samples (:class:`keyfer.train.sampler.GlobalBatchSampler`).
"""

from __future__ import annotations

import torch

from keyfer.data.labels import CLASSES


def class_balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """(N,) int64 label indices into :data:`CLASSES` -> (N,) float32 weights 1 / class count."""
    counts = torch.bincount(labels, minlength=len(CLASSES)).clamp(min=1).float()
    return (1.0 / counts)[labels]
