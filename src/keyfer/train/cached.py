"""Training an NKF head on Keypoint-Feature caches (frozen FaceMesh): minutes per run on a CPU.

Each step draws, per image, the crop or its mirror (when ``mirror``), and for KF regularization
the matching landmark-perturbed view from the cache (docs/method.md, 'KF regularization').
Evaluation uses the clean view. The rows of several sources' caches train together, each row's
loss restricted to its source's classes (:mod:`keyfer.train.losses`), in the order of
:mod:`keyfer.train.sampler`'s rule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from keyfer.errors import KeyferError
from keyfer.nkf.config import ModelConfig
from keyfer.nkf.head import NKFHead
from keyfer.nkf.model import NASAL_BASE_VERTEX, fuse, head_channels, keypoint_indices
from keyfer.train.appearance_cache import AppearanceCache
from keyfer.train.cache import UNREADABLE, KFCache
from keyfer.train.checkpoint import init_head
from keyfer.train.config import TrainConfig
from keyfer.train.distributed import Shard
from keyfer.train.loop import Batch, Trainer
from keyfer.train.losses import nkf_loss
from keyfer.train.sampler import GlobalBatchSampler, draw_weights
from keyfer.train.speed import compile_modules

log = logging.getLogger(__name__)


@dataclass
class CachedData:
    """Cache arrays in memory for the chosen taps and keypoints: ``kf`` (N, 4, K, C) and
    ``global_feature`` (N, 2, 128) float16, ``labels`` (N,), ``targets`` (N, 8); with an
    appearance branch also ``appearance_kf`` (N, 4, K, Ca) and ``appearance_global`` (N, 2, 256)
    float16 (views as in :data:`keyfer.train.cache.VIEWS`). ``source``: (N,) int64, each row's
    source (an index into the experiment's sources; None: all rows are of one source)."""

    kf: torch.Tensor
    global_feature: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    appearance_kf: torch.Tensor | None = None
    appearance_global: torch.Tensor | None = None
    source: torch.Tensor | None = None

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
            columns: np.ndarray | slice = channels
            if np.array_equal(channels, np.arange(channels[0], channels[-1] + 1)):
                columns = slice(channels[0], channels[-1] + 1)  # a view: far faster on a memmap
            return torch.from_numpy(np.ascontiguousarray(kf[..., columns][rows]))

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

    @classmethod
    def load_sources(
        cls,
        caches: Sequence[tuple[KFCache, AppearanceCache | None]],
        model: ModelConfig,
    ) -> CachedData:
        """The readable rows of each source's cache (and appearance cache) in turn, as
        :meth:`load` gives them, with each row's source index in ``source``. The rows are
        copied into arrays of the total size one source at a time."""
        sizes = [int((np.asarray(cache.labels) != UNREADABLE).sum()) for cache, _ in caches]
        source = torch.repeat_interleave(torch.arange(len(caches)), torch.tensor(sizes))
        if len(caches) == 1:
            return replace(cls.load(caches[0][0], model, caches[0][1]), source=source)
        whole: CachedData | None = None
        for index, (cache, appearance) in enumerate(caches):
            part = cls.load(cache, model, appearance)
            arrays = {f.name: getattr(part, f.name) for f in fields(part)}
            arrays = {name: array for name, array in arrays.items() if array is not None}
            if whole is None:
                shapes = {name: (len(source), *array.shape[1:]) for name, array in arrays.items()}
                whole = cls(
                    **{name: arrays[name].new_empty(shape) for name, shape in shapes.items()}
                )
            start = sum(sizes[:index])
            for name, array in arrays.items():
                getattr(whole, name)[start : start + sizes[index]] = array
        assert whole is not None  # caches is not empty
        return replace(whole, source=source)

    def __len__(self) -> int:
        return len(self.labels)

    def source_index(self) -> torch.Tensor:
        """(N,) int64: each row's source (all 0 without ``source``)."""
        if self.source is None:
            return torch.zeros(len(self), dtype=torch.long)
        return self.source

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

        def rows(array: torch.Tensor, at: torch.Tensor | int) -> torch.Tensor:
            return array[index, at].to(device).float()

        return fuse(
            config,
            rows(self.kf, slot),
            rows(self.global_feature, view),
            None if self.appearance_kf is None else rows(self.appearance_kf, slot),
            None if self.appearance_global is None else rows(self.appearance_global, view),
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


class CachedTrainer(Trainer):
    """The head alone on Keypoint-Feature cache rows (:class:`CachedData`), in the shared loop
    (:class:`~keyfer.train.loop.Trainer`) at ``train.lr``; one generator draws both the order and
    the steps' random numbers.

    ``source_weights``: each source's weight in the sampler's draws
    (:func:`~keyfer.train.sampler.draw_weights`); ``source_classes``: (S, n_classes) bool, the
    classes of each source, to which the loss of its rows is restricted (None: all classes).
    A subclass that trains more than the head overrides :meth:`networks` and :meth:`view_logits`
    (:class:`keyfer.train.upper_levels.UpperLevelTrainer`)."""

    def __init__(
        self,
        model: ModelConfig,
        train: TrainConfig,
        data: CachedData,
        device: torch.device | None = None,
        source_weights: Sequence[float] = (1.0,),
        source_classes: torch.Tensor | None = None,
    ) -> None:
        torch.manual_seed(train.seed)
        device = device or torch.device("cpu")
        self.head = build_head(model)
        if train.init_from:
            init_head(self.head, train.init_from, train.init_classifier)
        parts, groups = self.networks(train)
        module = nn.ModuleDict(parts) if len(parts) > 1 else self.head
        module.to(device)
        compile_modules(train, device, self.head)
        self.data = data
        self.source_classes = source_classes
        generator = torch.Generator().manual_seed(train.seed)
        weights = draw_weights(
            data.source_index(), data.labels, source_weights, train.balanced_sampler
        )
        sampler = GlobalBatchSampler(len(data), train.batch_size, generator, weights=weights)
        super().__init__(train, device, module, parts, groups, sampler, generator)

    def networks(self, train: TrainConfig) -> tuple[dict[str, nn.Module], list[dict[str, Any]]]:
        """The modules a checkpoint holds, by name, and the optimizer's parameter groups: the
        head at ``train.lr``."""
        return {"head": self.head}, [{"params": self.head.parameters(), "lr": train.lr}]

    def batches(self) -> Iterator[Batch]:
        """The (B,) cache rows of each of this process's shards."""
        return ((torch.tensor(rows),) for rows in self.sampler)

    def view_logits(
        self, index: torch.Tensor, view: torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``logits_for(moved)`` of :func:`nkf_loss` for cache rows ``index`` at (B,) ``view``
        (0 crop, 1 mirror)."""

        def logits_for(moved: torch.Tensor) -> torch.Tensor:
            slot = view + 2 * moved.long()  # cache views: clean, mirror, then their perturbed
            tokens, global_feature = self.data.head_input(
                self.head.config, index, slot, view, self.device
            )
            return self.head(tokens, global_feature).logits.float()

        return logits_for

    def loss(self, batch: Batch, shard: Shard) -> torch.Tensor:
        """:func:`nkf_loss` on cache rows ``batch``: each row's crop or (when ``train.mirror``,
        with probability 0.5) its mirror, at clean or perturbed landmarks."""
        (index,) = batch
        view = torch.zeros(len(index), dtype=torch.long)
        if self.train_config.mirror:
            view = (shard.rand(self.generator) < 0.5).long()
        labels = self.data.labels[index].to(self.device)
        targets = self.data.targets[index].to(self.device)
        allowed = None
        if self.source_classes is not None:
            allowed = self.source_classes[self.data.source_index()[index]].to(self.device)
        return nkf_loss(
            self.train_config,
            self.view_logits(index, view),
            labels,
            targets,
            self.generator,
            shard,
            allowed,
        )


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
