"""Training an NKF head on Keypoint-Feature caches (frozen FaceMesh): minutes per run on a CPU.

Each step draws, per image, the crop or its mirror (when ``mirror``), and for KF regularization
the matching landmark-perturbed view from the cache (METHOD §3). Evaluation uses the clean view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from keyfer.data.labels import CLASSES
from keyfer.faces.facemesh import TAP_CHANNELS
from keyfer.nkf.config import ModelConfig
from keyfer.nkf.head import NKFHead
from keyfer.nkf.keypoint_features import keypoint_feature_channels
from keyfer.nkf.model import GLOBAL_TAP, NASAL_BASE_VERTEX, keypoint_indices
from keyfer.train.cache import KFCache
from keyfer.train.config import TrainConfig
from keyfer.train.losses import nkf_loss

log = logging.getLogger(__name__)


@dataclass
class CachedData:
    """Cache arrays in memory for the chosen taps and keypoints: ``kf`` (N, 4, K, C) and
    ``global_feature`` (N, 2, 128) float16, ``labels`` (N,), ``targets`` (N, 8)."""

    kf: torch.Tensor
    global_feature: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def load(cls, cache: KFCache, model: ModelConfig) -> CachedData:
        cached = keypoint_indices(cache.meta["keypoints"])
        wanted = keypoint_indices(model.keypoints)
        subset = [cached.index(v) for v in wanted]
        kf = cache.kf[:, :, subset] if subset != list(range(len(cached))) else cache.kf
        channels = cache.tap_channels(model.taps)
        if np.array_equal(channels, np.arange(channels[0], channels[-1] + 1)):
            channels = slice(channels[0], channels[-1] + 1)  # a view: far faster on a memmap
        return cls(
            torch.from_numpy(np.ascontiguousarray(kf[..., channels])),
            torch.from_numpy(np.array(cache.global_feature)),
            torch.from_numpy(np.array(cache.labels)),
            torch.from_numpy(np.array(cache.targets)),
        )

    def __len__(self) -> int:
        return len(self.labels)


def build_head(model: ModelConfig) -> NKFHead:
    """The head of a model config."""
    keypoints = keypoint_indices(model.keypoints)
    return NKFHead(
        model,
        kf_channels=keypoint_feature_channels(model.taps),
        global_channels=TAP_CHANNELS[GLOBAL_TAP],
        num_keypoints=len(keypoints),
        representative=keypoints.index(NASAL_BASE_VERTEX),
    )


class CachedTrainer:
    """AdamW + one-cycle schedule over ``train.epochs``; :meth:`run_epoch` trains one epoch."""

    def __init__(self, model: ModelConfig, train: TrainConfig, data: CachedData) -> None:
        torch.manual_seed(train.seed)
        self.train_config = train
        self.data = data
        self.head = build_head(model)
        self.optimizer = torch.optim.AdamW(
            self.head.parameters(), lr=train.lr, weight_decay=train.weight_decay
        )
        steps = train.epochs * -(-len(data) // train.batch_size)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, train.lr, total_steps=steps, pct_start=0.1
        )
        self.generator = torch.Generator().manual_seed(train.seed)
        self.sample_weights = None
        if train.balanced_sampler:
            counts = torch.bincount(data.labels, minlength=len(CLASSES)).clamp(min=1).float()
            self.sample_weights = (1.0 / counts)[data.labels]

    def state_dict(self) -> dict:
        return {
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])

    def _loss(self, index: torch.Tensor) -> torch.Tensor:
        view = torch.zeros(len(index), dtype=torch.long)
        if self.train_config.mirror:
            view = (torch.rand(len(index), generator=self.generator) < 0.5).long()

        def logits_for(moved: torch.Tensor) -> torch.Tensor:
            slot = view + 2 * moved.long()  # cache views: clean, mirror, then their perturbed
            kf = self.data.kf[index, slot].float()
            return self.head(kf, self.data.global_feature[index, view].float()).logits

        labels, targets = self.data.labels[index], self.data.targets[index]
        return nkf_loss(self.train_config, logits_for, labels, targets, self.generator)

    def run_epoch(self) -> float:
        """One pass over the data (or as many balanced draws); returns the mean loss."""
        self.head.train()
        n = len(self.data)
        if self.sample_weights is not None:
            order = torch.multinomial(
                self.sample_weights, n, replacement=True, generator=self.generator
            )
        else:
            order = torch.randperm(n, generator=self.generator)
        total = 0.0
        for index in tqdm(order.split(self.train_config.batch_size), leave=False, disable=None):
            loss = self._loss(index)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item() * len(index)
        return total / n


@torch.inference_mode()
def head_logits(
    head: NKFHead, data: CachedData, mirror_tta: bool = False, perturbed: bool = False
) -> torch.Tensor:
    """(N, n_classes) logits on the clean view (or, with ``perturbed``, its landmark-perturbed
    view), averaged with the mirror view for ``mirror_tta``."""
    head.eval()
    slot = 2 if perturbed else 0
    outs = []
    for index in torch.arange(len(data)).split(1024):
        logits = head(data.kf[index, slot].float(), data.global_feature[index, 0].float()).logits
        if mirror_tta:
            kf, global_feature = data.kf[index, slot + 1].float(), data.global_feature[index, 1]
            logits = (logits + head(kf, global_feature.float()).logits) / 2
        outs.append(logits)
    return torch.cat(outs)
