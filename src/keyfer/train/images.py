"""Image-level NKF training: augmented face crops through FaceMesh (frozen or fine-tuned).

Slower than the cached engine, but it is the only way to fine-tune the alignment network, and it
sees fresh augmentation every epoch. The faces are prepared once into a crop cache per source
and split (:mod:`keyfer.train.crops`) and augmented on the 192x192 crop; bf16 autocast
(``train.bf16``) is used on CUDA. Under torchrun each process trains on its shard of every global
batch. As in the cached engine, several sources train together, each sample's loss restricted to
its source's classes, in the order of :mod:`keyfer.train.sampler`'s rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from keyfer.data.augment import AugmentConfig, augment_face
from keyfer.data.labels import Sample
from keyfer.evaluate import predict_logits
from keyfer.faces.facemesh import CROP_SIZE, FaceMesh
from keyfer.nkf.model import NKFModel
from keyfer.nkf.perturbation import perturb_keypoints
from keyfer.train.checkpoint import init_head
from keyfer.train.config import Experiment
from keyfer.train.crops import CropCache
from keyfer.train.distributed import Shard, gather_rows, shard_rows
from keyfer.train.loop import Batch, Trainer
from keyfer.train.losses import nkf_loss
from keyfer.train.sampler import GlobalBatchSampler, draw_weights
from keyfer.train.speed import compile_modules


def augment_for_crop(config: AugmentConfig, margin: float) -> AugmentConfig:
    """``config``, whose shift and erased area are relative to the tight face, rescaled for the
    192x192 crop, where the face spans 1 / (1 + 2 ``margin``) of the side."""
    face = 1 / (1 + 2 * margin)
    low, high = config.erase_area
    return replace(config, shift=config.shift * face, erase_area=(low * face**2, high * face**2))


class SourceCrops:
    """The crop caches of several sources' samples read as one: row ``i`` of the whole is row
    ``i - start`` of the cache whose rows start at ``start`` (for :class:`FaceCropDataset`)."""

    def __init__(self, parts: Sequence[CropCache]) -> None:
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(part) for part in parts])
        self.readable = np.concatenate([part.readable for part in parts])
        self.meta = parts[0].meta  # the same preparation (margin, padding) in every part

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """(B, 192, 192, 3) uint8 crops of ``rows``, each read from its source's cache."""
        rows = np.asarray(rows)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        crops = np.empty((len(rows), CROP_SIZE, CROP_SIZE, 3), np.uint8)
        for index in np.unique(part):
            inside = part == index
            crops[inside] = self.parts[index].read(rows[inside] - self.starts[index])
        return crops


class FaceCropDataset(Dataset):
    """Labelled faces from a crop cache -> ((3, 192, 192) float crops in [0, 1], label, (8,)
    target, source index). ``rows``: each sample's row in ``crops``; ``source``: each sample's
    source (None: all 0). A key is ``(index, epoch seed)``: the augmentation depends on those
    only, not on the process or worker that loads the sample."""

    def __init__(
        self,
        samples: list[Sample],
        crops: CropCache | SourceCrops,
        rows: np.ndarray,
        augment: AugmentConfig | None,
        source: np.ndarray | None = None,
    ) -> None:
        self.samples = samples
        self.crops = crops
        self.rows = rows
        self.augment = augment
        self.source = np.zeros(len(samples), np.int64) if source is None else source

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, torch.Tensor, int]:
        index, seed = key
        sample = self.samples[index]
        crop = self.crops.read([self.rows[index]])[0]
        if self.augment is not None:
            crop = augment_face(crop, np.random.default_rng([seed, index]), self.augment)
        tensor = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() / 255.0
        return tensor, sample.label, torch.from_numpy(sample.target), int(self.source[index])


class _SeededBatches:
    """The sampler's batches as :class:`FaceCropDataset` keys, with a seed drawn per epoch."""

    def __init__(self, sampler: GlobalBatchSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        seed = int(torch.randint(2**62, (), generator=self.sampler.generator))
        return ([(index, seed) for index in batch] for batch in self.sampler)


def _face_loader(
    experiment: Experiment,
    samples: list[Sample],
    crops: CropCache | SourceCrops,
    source: np.ndarray,
    device: torch.device,
) -> tuple[GlobalBatchSampler, DataLoader]:
    """The sampler of the readable samples (of sources ``source``), and the data loader of
    their augmented crops."""
    train = experiment.train
    rows = np.flatnonzero(crops.readable)
    kept = [samples[i] for i in rows]
    weights = draw_weights(
        torch.from_numpy(source[rows]),
        torch.tensor([s.label for s in kept], dtype=torch.long),
        [s.weight for s in experiment.sources],
        train.balanced_sampler,
    )
    generator = torch.Generator().manual_seed(train.seed)
    drop_last = len(kept) > train.batch_size
    sampler = GlobalBatchSampler(len(kept), train.batch_size, generator, drop_last, weights)
    augment = train.images.augment_config(train.mirror)
    if augment is not None:
        augment = augment_for_crop(augment, crops.meta["margin"])
    loader = DataLoader(
        FaceCropDataset(kept, crops, rows, augment, source[rows]),
        batch_sampler=_SeededBatches(sampler),
        num_workers=train.images.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=train.images.num_workers > 0,
    )
    return sampler, loader


@torch.inference_mode()
def crop_logits(
    model: NKFModel,
    crops: CropCache,
    rows: np.ndarray,
    tta_flip: bool = False,
    batch_size: int = 64,
) -> torch.Tensor:
    """(len(rows), n_classes) temperature-scaled logits of the cached crops at ``rows``; under
    torchrun each process scores its share and every process gets them all."""
    mine = rows[shard_rows(len(rows))]
    outs = [
        predict_logits(model, crops.read(mine[start : start + batch_size]), tta_flip)
        for start in range(0, len(mine), batch_size)
    ]
    local = torch.cat(outs) if outs else torch.zeros((0, len(model.info.classes)))
    return gather_rows(local, len(rows))


class ImageTrainer(Trainer):
    """The whole model on augmented crops, in the shared loop (:class:`~keyfer.train.loop.Trainer`):
    the head at ``train.lr``, a fine-tuned FaceMesh at ``train.images.alignment_lr`` (kept near the
    original by distillation) and a fine-tuned appearance branch at ``train.images.appearance_lr``
    (frozen for the first ``appearance_freeze_epochs``).

    ``crops`` holds the prepared faces of ``samples`` (unreadable ones are left out). With
    several sources, ``source`` is each sample's source (an index into ``experiment.sources``)
    and ``source_classes`` (S, n_classes) bool the classes of each, to which the loss of its
    samples is restricted (None: all classes).
    """

    def __init__(
        self,
        experiment: Experiment,
        samples: list[Sample],
        crops: CropCache | SourceCrops,
        device: torch.device,
        source: np.ndarray | None = None,
        source_classes: torch.Tensor | None = None,
    ) -> None:
        train, images = experiment.train, experiment.train.images
        torch.manual_seed(train.seed)
        self.experiment = experiment
        self.model = NKFModel(experiment.model).to(device)
        if train.init_from:
            init_head(self.model.head, train.init_from, train.init_classifier)
        parts: dict[str, nn.Module] = {"head": self.model.head}
        groups = [{"params": self.model.head.parameters(), "lr": train.lr}]
        self.teacher = None
        if experiment.model.finetune_alignment:
            # FaceMesh runs channels_last: weights in their gradients' layout for DDP (torch's
            # overloads of Module.to lack memory_format, which it takes).
            self.model.facemesh.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            parts["facemesh"] = self.model.facemesh
            groups.append({"params": self.model.facemesh.parameters(), "lr": images.alignment_lr})
            if images.distill_weight > 0:
                self.teacher = FaceMesh.from_pretrained().to(device)
        compile_modules(train, device, self.model.facemesh, self.model.head)
        if self.model.appearance is not None and experiment.model.finetune_appearance:
            parts["appearance"] = self.model.appearance
            groups.append(
                {"params": self.model.appearance.parameters(), "lr": images.appearance_lr}
            )
        self.source = np.zeros(len(samples), np.int64) if source is None else source
        self.source_classes = source_classes
        sampler, self.loader = _face_loader(experiment, samples, crops, self.source, device)
        generator = torch.Generator().manual_seed(train.seed + 1)
        super().__init__(train, device, self.model, parts, groups, sampler, generator)

    def batches(self) -> Iterator[Batch]:
        """The (B, 3, 192, 192) augmented crops on the device, (B,) labels, (B, 8) targets and
        (B,) source indices of each of this process's shards."""
        return (
            (crops.to(self.device, non_blocking=True), labels, targets.float(), source)
            for crops, labels, targets, source in self.loader
        )

    def loss(self, batch: Batch, shard: Shard) -> torch.Tensor:
        """:func:`nkf_loss` on the crops of ``batch`` (landmarks perturbed in IOD units), plus
        ``distill_weight`` x the drift of a fine-tuned FaceMesh's mesh from the original's."""
        crops, labels, targets, source = batch
        train, model = self.experiment.train, self.model
        features = model.features(crops)
        noise = shard.randn(self.generator, *features.keypoints.shape[1:])
        moved_points = perturb_keypoints(features.keypoints, features.iod, train.sigma, noise=noise)

        def logits_for(moved: torch.Tensor) -> torch.Tensor:
            where = moved.to(crops.device)[:, None, None]
            points = torch.where(where, moved_points, features.keypoints)
            return model.classify(features, points).logits.float()

        labels, targets = labels.to(crops.device), targets.to(crops.device)
        allowed = None
        if self.source_classes is not None:
            allowed = self.source_classes[source].to(crops.device)
        loss = nkf_loss(train, logits_for, labels, targets, self.generator, shard, allowed)
        if self.teacher is not None:
            with torch.no_grad():
                reference = self.teacher(crops).mesh[..., :2]
            drift = F.mse_loss(
                features.mesh[..., :2].float() / CROP_SIZE, reference.float() / CROP_SIZE
            )
            loss = loss + train.images.distill_weight * drift
        return loss

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The fine-tuned appearance branch's parameters while ``appearance_freeze_epochs``
        still hold it frozen (the scheduler counts the epochs done), else none."""
        appearance = self.parts.get("appearance")
        epoch = self.scheduler.last_epoch // max(len(self.sampler), 1)
        if appearance is None or epoch >= self.experiment.train.images.appearance_freeze_epochs:
            return []
        return list(appearance.parameters())
