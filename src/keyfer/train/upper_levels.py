"""Fine-tuning dlib's upper levels on caches: the cached engine with ``finetune_appearance``.

The head trains on Keypoint-Feature cache rows (frozen FaceMesh, as in
:mod:`keyfer.train.cached`) while dlib's levels after level3 (level2, level1, level0) train on
cached level3 maps (:mod:`keyfer.train.level3_cache`): the appearance Keypoint Features of the
fine-tuned taps are sampled from the maps the trained levels compute, at the view's clean or
perturbed keypoints, and the global appearance feature is level0's pooled map. The stem, level4
and level3 stay as dlib trained them. Three to four times the image engine's speed on a CPU,
because the lower levels and FaceMesh never run, at the price of pixel augmentation (the cached
maps are of unaugmented crops; mirroring and landmark perturbation remain).

The head trains at ``train.lr``, the upper levels at ``train.images.appearance_lr``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from keyfer.errors import KeyferError
from keyfer.faces.dlib_resnet import TAPS, DlibResNetOutput
from keyfer.nkf.appearance import GLOBAL_TAP, AppearanceBranch, sample_chip_features
from keyfer.nkf.config import ModelConfig
from keyfer.nkf.model import fuse, keypoint_indices
from keyfer.train.cache import UNREADABLE, KFCache
from keyfer.train.cached import CachedData, CachedTrainer
from keyfer.train.config import Experiment, TrainConfig
from keyfer.train.level3_cache import CACHED_LEVEL, Level3Cache

TRAINED_LEVELS = tuple(list(TAPS)[list(TAPS).index(CACHED_LEVEL) + 1 :])
"""The dlib levels this engine fine-tunes: those after the cached one."""


def check_upper_level_taps(config: ModelConfig) -> None:
    """A model whose appearance taps lie below the cached level cannot be fine-tuned this way."""
    below = [tap for tap in config.appearance_taps if tap not in (CACHED_LEVEL, *TRAINED_LEVELS)]
    if below:
        raise KeyferError(
            f"the cached engine fine-tunes dlib's levels after {CACHED_LEVEL}; appearance taps "
            f"{below} lie below them: use train.engine=images"
        )


@dataclass
class Level3Data:
    """Level-3 cache rows in memory, row for row with a :class:`CachedData`: ``level3``
    (N, 2, 64, 17, 17) float16 (crop, mirror) and ``chip_points`` (N, 4, K, 2) float32 chip
    pixels, views as in :data:`keyfer.train.cache.VIEWS`."""

    level3: torch.Tensor
    chip_points: torch.Tensor

    @classmethod
    def load_sources(
        cls, caches: Sequence[tuple[KFCache, Level3Cache]], model: ModelConfig
    ) -> Level3Data:
        """The rows of each source's level-3 cache that its Keypoint-Feature cache keeps (those
        not labelled :data:`UNREADABLE`), for the model's keypoints, one source after another
        (the order of :meth:`CachedData.load_sources`)."""
        kept = [np.flatnonzero(np.asarray(kf.labels) != UNREADABLE) for kf, _ in caches]
        first = caches[0][1]
        level3 = torch.empty((sum(map(len, kept)), *first.level3.shape[1:]), dtype=torch.float16)
        points = []
        start = 0
        for (kf, maps), rows in zip(caches, kept, strict=True):
            cached = keypoint_indices(kf.meta["keypoints"])
            subset = [cached.index(v) for v in keypoint_indices(model.keypoints)]
            level3[start : start + len(rows)] = torch.from_numpy(np.asarray(maps.level3[rows]))
            points.append(torch.from_numpy(np.asarray(maps.chip_points[rows][:, :, subset])))
            start += len(rows)
        return cls(level3, torch.cat(points))


def facemesh_rows(caches: Sequence[KFCache], model: ModelConfig) -> CachedData:
    """The Keypoint-Feature cache rows of each source (FaceMesh's features only: the appearance
    features are computed by the fine-tuned levels)."""
    facemesh_only = replace(model, appearance="none")
    return CachedData.load_sources([(cache, None) for cache in caches], facemesh_only)


def upper_level_taps(branch: AppearanceBranch, level3: torch.Tensor) -> DlibResNetOutput:
    """The branch's network on (B, 64, 17, 17) level3 maps: its taps (the given level3 map
    among them) for the branch's appearance taps and the global tap."""
    wanted = {*branch.taps, GLOBAL_TAP}
    return branch.network.levels_after(CACHED_LEVEL, level3, wanted, {CACHED_LEVEL: level3})


def appearance_logits(
    config: ModelConfig,
    head: nn.Module,
    taps: Sequence[str],
    out: DlibResNetOutput,
    rows: CachedData,
    maps: Level3Data,
    index: torch.Tensor,
    view: torch.Tensor,
    moved: torch.Tensor,
) -> torch.Tensor:
    """(B, n_classes) logits of cache rows ``index`` at (B,) ``view`` (0 crop, 1 mirror), their
    keypoints perturbed where (B,) bool ``moved``, given the upper levels' ``out`` on those rows
    (:func:`upper_level_taps`) and the appearance ``taps`` to sample."""
    device = out.taps[GLOBAL_TAP].device
    slot = view + 2 * moved.long()  # cache views: clean, mirror, then their perturbed
    points = maps.chip_points[index, slot].to(device)
    tokens, global_feature = fuse(
        config,
        rows.kf[index, slot].to(device).float(),
        rows.global_feature[index, view].to(device).float(),
        sample_chip_features(out.taps, points, taps),
        out.taps[GLOBAL_TAP].mean(dim=(2, 3)),
    )
    return head(tokens, global_feature).logits.float()


class UpperLevelTrainer(CachedTrainer):
    """The head and dlib's upper levels on cache rows (:class:`CachedTrainer`'s loop, sampler and
    loss): the upper levels run once per step on the rows' level3 maps of the drawn view, at
    ``train.images.appearance_lr``; ``maps`` are the level-3 rows of ``rows``."""

    def __init__(
        self,
        experiment: Experiment,
        rows: CachedData,
        maps: Level3Data,
        device: torch.device | None = None,
        source_weights: Sequence[float] = (1.0,),
        source_classes: torch.Tensor | None = None,
    ) -> None:
        check_upper_level_taps(experiment.model)
        self.maps = maps
        super().__init__(
            experiment.model, experiment.train, rows, device, source_weights, source_classes
        )

    def networks(self, train: TrainConfig) -> tuple[dict[str, nn.Module], list[dict[str, Any]]]:
        """The head at ``train.lr`` and the appearance branch, of which only the levels after
        the cached one train."""
        self.branch = AppearanceBranch(self.head.config.appearance_taps, frozen=False)
        upper = [getattr(self.branch.network, name) for name in TRAINED_LEVELS]
        self.branch.requires_grad_(False)
        for level in upper:
            level.requires_grad_(True)
        groups = [
            {"params": self.head.parameters(), "lr": train.lr},
            {
                "params": [p for level in upper for p in level.parameters()],
                "lr": train.images.appearance_lr,
            },
        ]
        return {"head": self.head, "appearance": self.branch}, groups

    def view_logits(
        self, index: torch.Tensor, view: torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``logits_for(moved)`` of rows ``index`` at ``view``, the upper levels run once."""
        out = upper_level_taps(self.branch, self.maps.level3[index, view].to(self.device).float())

        def logits_for(moved: torch.Tensor) -> torch.Tensor:
            return appearance_logits(
                self.head.config,
                self.head,
                self.branch.taps,
                out,
                self.data,
                self.maps,
                index,
                view,
                moved,
            )

        return logits_for


@torch.inference_mode()
def upper_level_logits(
    trainer: UpperLevelTrainer,
    rows: CachedData,
    maps: Level3Data,
    mirror_tta: bool = False,
    perturbed: bool = False,
) -> torch.Tensor:
    """(N, n_classes) logits (on the CPU) of ``rows`` on the clean view (or, with ``perturbed``,
    its landmark-perturbed view), averaged with the mirror view for ``mirror_tta``."""
    trainer.module.eval()
    moved = torch.tensor(perturbed)

    def logits(index: torch.Tensor, view: int) -> torch.Tensor:
        views = torch.full((len(index),), view, dtype=torch.long)
        level3 = maps.level3[index, view].to(trainer.device).float()
        out = upper_level_taps(trainer.branch, level3)
        return appearance_logits(
            trainer.head.config,
            trainer.head,
            trainer.branch.taps,
            out,
            rows,
            maps,
            index,
            views,
            moved,
        )

    outs = []
    for index in torch.arange(len(rows)).split(512):
        out = logits(index, 0)
        if mirror_tta:
            out = (out + logits(index, 1)) / 2
        outs.append(out.cpu())
    return torch.cat(outs)
