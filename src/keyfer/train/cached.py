"""Training an NKF head on Keypoint-Feature caches (frozen FaceMesh): minutes per run on a CPU.

Each step draws, per image, the crop or its mirror (when ``mirror``), and for KF regularization
the matching landmark-perturbed view from the cache (docs/method.md, 'KF regularization').
Evaluation uses the clean view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from keyfer.data.sampling import class_balanced_weights
from keyfer.errors import KeyferError
from keyfer.nkf.config import ModelConfig
from keyfer.nkf.head import NKFHead
from keyfer.nkf.model import NASAL_BASE_VERTEX, fuse, head_channels, keypoint_indices
from keyfer.train.appearance_cache import AppearanceCache
from keyfer.train.cache import UNREADABLE, KFCache
from keyfer.train.checkpoint import init_head
from keyfer.train.config import TrainConfig
from keyfer.train.distributed import (
    Shard,
    all_reduce_sum,
    data_parallel,
    progress_disabled,
    seed_process_rng,
)
from keyfer.train.losses import nkf_loss
from keyfer.train.sampler import GlobalBatchSampler
from keyfer.train.speed import autocast, compile_modules

log = logging.getLogger(__name__)


@dataclass
class CachedData:
    """Cache arrays in memory for the chosen taps and keypoints: ``kf`` (N, 4, K, C) and
    ``global_feature`` (N, 2, 128) float16, ``labels`` (N,), ``targets`` (N, 8); with an
    appearance branch also ``appearance_kf`` (N, 4, K, Ca) and ``appearance_global`` (N, 2, 256)
    float16 (views as in :data:`keyfer.train.cache.VIEWS`)."""

    kf: torch.Tensor
    global_feature: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    appearance_kf: torch.Tensor | None = None
    appearance_global: torch.Tensor | None = None

    @classmethod
    def load(
        cls, cache: KFCache, model: ModelConfig, appearance: AppearanceCache | None = None
    ) -> CachedData:
        """The cache's readable images (those not labelled :data:`UNREADABLE`), with the
        appearance cache beside it when the model has an appearance branch."""
        cached = keypoint_indices(cache.meta["keypoints"])
        wanted = keypoint_indices(model.keypoints)
        subset = [cached.index(v) for v in wanted]
        readable = np.flatnonzero(np.asarray(cache.labels) != UNREADABLE)
        rows = slice(None) if len(readable) == len(cache.labels) else readable

        def select(kf: np.ndarray, channels: np.ndarray) -> torch.Tensor:
            kf = kf[:, :, subset] if subset != list(range(len(cached))) else kf
            if np.array_equal(channels, np.arange(channels[0], channels[-1] + 1)):
                channels = slice(channels[0], channels[-1] + 1)  # a view: far faster on a memmap
            return torch.from_numpy(np.ascontiguousarray(kf[..., channels][rows]))

        data = cls(
            select(cache.kf, cache.tap_channels(model.taps)),
            torch.from_numpy(np.array(cache.global_feature[rows])),
            torch.from_numpy(np.array(cache.labels[rows])),
            torch.from_numpy(np.array(cache.targets[rows])),
        )
        if model.appearance != "none":
            if appearance is None:
                raise KeyferError("a model with an appearance branch needs its appearance cache")
            data.appearance_kf = select(
                appearance.kf, appearance.tap_channels(model.appearance_taps)
            )
            data.appearance_global = torch.from_numpy(np.array(appearance.global_feature[rows]))
        return data

    def __len__(self) -> int:
        return len(self.labels)

    def head_input(
        self,
        config: ModelConfig,
        index: torch.Tensor,
        slot: torch.Tensor | int,
        view: torch.Tensor | int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's (B, K, C) tokens and (B, G) global feature, float32 on ``device``, for rows
        ``index`` at KF view ``slot`` and global view ``view`` (fused as :func:`fuse` does)."""

        def rows(array: torch.Tensor | None, at) -> torch.Tensor | None:
            return None if array is None else array[index, at].to(device).float()

        return fuse(
            config,
            rows(self.kf, slot),
            rows(self.global_feature, view),
            rows(self.appearance_kf, slot),
            rows(self.appearance_global, view),
        )


def build_head(model: ModelConfig) -> NKFHead:
    """The head of a model config."""
    keypoints = keypoint_indices(model.keypoints)
    kf_channels, global_channels = head_channels(model)
    return NKFHead(
        model,
        kf_channels=kf_channels,
        global_channels=global_channels,
        num_keypoints=len(keypoints),
        representative=keypoints.index(NASAL_BASE_VERTEX),
    )


class _HeadLoss(nn.Module):
    """The loss of one step on cache rows: the module that DistributedDataParallel wraps."""

    def __init__(
        self, head: NKFHead, train: TrainConfig, data: CachedData, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.head = head
        self.train_config = train
        self.data = data
        self.generator = generator

    def forward(self, index: torch.Tensor, shard: Shard) -> torch.Tensor:
        device = next(self.head.parameters()).device
        view = torch.zeros(len(index), dtype=torch.long)
        if self.train_config.mirror:
            view = (shard.rand(self.generator) < 0.5).long()

        def logits_for(moved: torch.Tensor) -> torch.Tensor:
            slot = view + 2 * moved.long()  # cache views: clean, mirror, then their perturbed
            tokens, global_feature = self.data.head_input(
                self.head.config, index, slot, view, device
            )
            return self.head(tokens, global_feature).logits.float()

        labels = self.data.labels[index].to(device)
        targets = self.data.targets[index].to(device)
        return nkf_loss(self.train_config, logits_for, labels, targets, self.generator, shard)


class CachedTrainer:
    """AdamW + one-cycle schedule over ``train.epochs``; :meth:`run_epoch` trains one epoch.

    Under torchrun each process trains on its shard of every global batch of ``batch_size``.
    """

    def __init__(
        self,
        model: ModelConfig,
        train: TrainConfig,
        data: CachedData,
        device: torch.device | None = None,
    ) -> None:
        torch.manual_seed(train.seed)
        self.train_config = train
        device = device or torch.device("cpu")
        self.device = device
        self.head = build_head(model)
        if train.init_from:
            init_head(self.head, train.init_from, train.init_classifier)
        self.head.to(device)
        compile_modules(train, device, self.head)
        self.optimizer = torch.optim.AdamW(
            self.head.parameters(), lr=train.lr, weight_decay=train.weight_decay
        )
        self.generator = torch.Generator().manual_seed(train.seed)
        weights = class_balanced_weights(data.labels) if train.balanced_sampler else None
        self.sampler = GlobalBatchSampler(
            len(data), train.batch_size, self.generator, weights=weights
        )
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, train.lr, total_steps=train.epochs * len(self.sampler), pct_start=0.1
        )
        self.step_loss = data_parallel(_HeadLoss(self.head, train, data, self.generator), device)
        seed_process_rng(train.seed)

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

    def run_epoch(self) -> float:
        """One pass over the data (or as many balanced draws); returns the mean loss over all
        processes."""
        self.head.train()
        total, count = 0.0, 0
        batches = zip(self.sampler.shards(), self.sampler, strict=True)
        for shard, rows in tqdm(
            batches, total=len(self.sampler), leave=False, disable=progress_disabled()
        ):
            index = torch.tensor(rows)
            with autocast(self.train_config, self.device):
                loss = self.step_loss(index, shard)
            self.optimizer.zero_grad(set_to_none=True)
            (loss * shard.weight).backward()
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item() * len(index)
            count += len(index)
        total, count = all_reduce_sum([total, count])
        return total / count


@torch.inference_mode()
def head_logits(
    head: NKFHead, data: CachedData, mirror_tta: bool = False, perturbed: bool = False
) -> torch.Tensor:
    """(N, n_classes) logits (on the CPU) on the clean view (or, with ``perturbed``, its
    landmark-perturbed view), averaged with the mirror view for ``mirror_tta``."""
    head.eval()
    device = next(head.parameters()).device
    slot = 2 if perturbed else 0

    def logits(index: torch.Tensor, view: int) -> torch.Tensor:
        tokens, global_feature = data.head_input(head.config, index, slot + view, view, device)
        return head(tokens, global_feature).logits.float()

    outs = []
    for index in torch.arange(len(data)).split(1024):
        out = logits(index, 0)
        if mirror_tta:
            out = (out + logits(index, 1)) / 2
        outs.append(out.cpu())
    return torch.cat(outs)
