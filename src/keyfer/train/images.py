"""Image-level NKF training: augmented face crops through FaceMesh (frozen or fine-tuned).

Slower than the cached engine, but it is the only way to fine-tune the alignment network, and it
sees fresh augmentation every epoch. The faces are prepared once into a crop cache
(:mod:`keyfer.train.crops`) and augmented on the 192x192 crop; bf16 autocast (``train.bf16``) is
used on CUDA. Under torchrun each process trains on its shard of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from keyfer.data.augment import AugmentConfig, augment_face
from keyfer.data.labels import Sample
from keyfer.data.sampling import class_balanced_weights
from keyfer.evaluate import predict_logits
from keyfer.faces.facemesh import CROP_SIZE, FaceMesh
from keyfer.nkf.model import NKFModel
from keyfer.nkf.perturbation import perturb_keypoints
from keyfer.train.checkpoint import init_head
from keyfer.train.config import Experiment
from keyfer.train.crops import CropCache
from keyfer.train.distributed import (
    Shard,
    all_reduce_sum,
    data_parallel,
    gather_rows,
    progress_disabled,
    seed_process_rng,
    shard_rows,
)
from keyfer.train.losses import nkf_loss
from keyfer.train.sampler import GlobalBatchSampler
from keyfer.train.speed import autocast, compile_modules


def augment_for_crop(config: AugmentConfig, margin: float) -> AugmentConfig:
    """``config``, whose shift and erased area are relative to the tight face, rescaled for the
    192x192 crop, where the face spans 1 / (1 + 2 ``margin``) of the side."""
    face = 1 / (1 + 2 * margin)
    low, high = config.erase_area
    return replace(config, shift=config.shift * face, erase_area=(low * face**2, high * face**2))


class FaceCropDataset(Dataset):
    """Labelled faces from a crop cache -> ((3, 192, 192) float crops in [0, 1], label, (8,)
    target). ``rows``: each sample's row in ``crops``. A key is ``(index, epoch seed)``: the
    augmentation depends on those only, not on the process or worker that loads the sample."""

    def __init__(
        self,
        samples: list[Sample],
        crops: CropCache,
        rows: np.ndarray,
        augment: AugmentConfig | None,
    ) -> None:
        self.samples = samples
        self.crops = crops
        self.rows = rows
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, torch.Tensor]:
        index, seed = key
        sample = self.samples[index]
        crop = self.crops.read([self.rows[index]])[0]
        if self.augment is not None:
            crop = augment_face(crop, np.random.default_rng([seed, index]), self.augment)
        tensor = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() / 255.0
        return tensor, sample.label, torch.from_numpy(sample.target)


class _SeededBatches:
    """The sampler's batches as :class:`FaceCropDataset` keys, with a seed drawn per epoch."""

    def __init__(self, sampler: GlobalBatchSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        seed = int(torch.randint(2**62, (), generator=self.sampler.generator))
        return ([(index, seed) for index in batch] for batch in self.sampler)


class _ImageLoss(nn.Module):
    """The loss of one step on crops: the module that DistributedDataParallel wraps."""

    def __init__(
        self,
        model: NKFModel,
        teacher: FaceMesh | None,
        experiment: Experiment,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.model = model
        self.teacher = teacher
        self.experiment = experiment
        self.generator = generator

    def forward(
        self, crops: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, shard: Shard
    ) -> torch.Tensor:
        train, model = self.experiment.train, self.model
        features = model.features(crops)
        noise = shard.randn(self.generator, *features.keypoints.shape[1:])
        moved_points = perturb_keypoints(features.keypoints, features.iod, train.sigma, noise=noise)

        def logits_for(moved: torch.Tensor) -> torch.Tensor:
            where = moved.to(crops.device)[:, None, None]
            points = torch.where(where, moved_points, features.keypoints)
            return model.classify(features, points).logits.float()

        labels, targets = labels.to(crops.device), targets.to(crops.device)
        loss = nkf_loss(train, logits_for, labels, targets, self.generator, shard)
        if self.teacher is not None:
            with torch.no_grad():
                reference = self.teacher(crops).mesh[..., :2]
            drift = F.mse_loss(
                features.mesh[..., :2].float() / CROP_SIZE, reference.float() / CROP_SIZE
            )
            loss = loss + train.distill_weight * drift
        return loss


def _face_loader(
    experiment: Experiment, samples: list[Sample], crops: CropCache, device: torch.device
) -> tuple[GlobalBatchSampler, DataLoader]:
    """The sampler of the readable samples, and the data loader of their augmented crops."""
    train = experiment.train
    rows = np.flatnonzero(crops.readable)
    kept = [samples[i] for i in rows]
    weights = None
    if train.balanced_sampler:
        weights = class_balanced_weights(torch.tensor([s.label for s in kept]))
    generator = torch.Generator().manual_seed(train.seed)
    drop_last = len(kept) > train.batch_size
    sampler = GlobalBatchSampler(len(kept), train.batch_size, generator, drop_last, weights)
    augment = None
    if train.augment:
        config = AugmentConfig(flip=train.mirror, **train.augmentation)
        augment = augment_for_crop(config, crops.meta["margin"])
    loader = DataLoader(
        FaceCropDataset(kept, crops, rows, augment),
        batch_sampler=_SeededBatches(sampler),
        num_workers=train.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=train.num_workers > 0,
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


class ImageTrainer:
    """AdamW + one-cycle over the head (``lr``) and a fine-tuned FaceMesh (``alignment_lr``).

    ``crops`` holds the prepared faces of ``samples`` (unreadable ones are left out).
    """

    def __init__(
        self,
        experiment: Experiment,
        samples: list[Sample],
        crops: CropCache,
        device: torch.device,
    ) -> None:
        train = experiment.train
        torch.manual_seed(train.seed)
        self.experiment = experiment
        self.device = device
        self.model = NKFModel(experiment.model).to(device)
        if train.init_from:
            init_head(self.model.head, train.init_from, train.init_classifier)
        finetune = experiment.model.finetune_alignment
        if finetune:  # FaceMesh runs channels_last: weights in their gradients' layout for DDP
            self.model.facemesh.to(memory_format=torch.channels_last)
        teacher = None
        if finetune and train.distill_weight > 0:
            teacher = FaceMesh.from_pretrained().to(device)
        compile_modules(train, device, self.model.facemesh, self.model.head)
        groups = [{"params": self.model.head.parameters(), "lr": train.lr}]
        if finetune:
            groups.append({"params": self.model.facemesh.parameters(), "lr": train.alignment_lr})
        if experiment.model.finetune_appearance:
            appearance = self.model.appearance.parameters()
            groups.append({"params": appearance, "lr": train.appearance_lr})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=train.weight_decay)
        self.sampler, self.loader = _face_loader(experiment, samples, crops, device)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            [g["lr"] for g in groups],
            total_steps=train.epochs * len(self.sampler),
            pct_start=0.1,
        )
        self.generator = torch.Generator().manual_seed(train.seed + 1)
        loss = _ImageLoss(self.model, teacher, experiment, self.generator)
        self.step_loss = data_parallel(loss, device)
        seed_process_rng(train.seed)

    def state_dict(self) -> dict:
        state = {
            "head": self.model.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "sampler": self.sampler.generator.get_state(),
        }
        if self.experiment.model.finetune_alignment:
            state["facemesh"] = self.model.facemesh.state_dict()
        if self.experiment.model.finetune_appearance:
            state["appearance"] = self.model.appearance.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.head.load_state_dict(state["head"])
        if "facemesh" in state:
            self.model.facemesh.load_state_dict(state["facemesh"])
        if "appearance" in state:
            self.model.appearance.load_state_dict(state["appearance"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.sampler.generator.set_state(state["sampler"])

    def _appearance_frozen(self) -> list[nn.Parameter]:
        """The fine-tuned appearance branch's parameters while ``appearance_freeze_epochs``
        still hold it frozen (the scheduler counts the epochs done), else none."""
        train = self.experiment.train
        if not self.experiment.model.finetune_appearance:
            return []
        epoch = self.scheduler.last_epoch // max(len(self.sampler), 1)
        return (
            list(self.model.appearance.parameters())
            if epoch < train.appearance_freeze_epochs
            else []
        )

    def run_epoch(self) -> float:
        """One pass over the training images; returns the mean loss over all processes."""
        self.model.train()
        total, count = 0.0, 0
        frozen = self._appearance_frozen()
        batches = zip(self.sampler.shards(), self.loader, strict=True)
        for shard, (crops, labels, targets) in tqdm(
            batches, total=len(self.sampler), leave=False, disable=progress_disabled()
        ):
            crops = crops.to(self.device, non_blocking=True)
            with autocast(self.experiment.train, self.device):
                loss = self.step_loss(crops, labels, targets.float(), shard)
            self.optimizer.zero_grad(set_to_none=True)
            (loss * shard.weight).backward()
            for parameter in frozen:  # no gradient: AdamW neither steps nor decays them
                parameter.grad = None
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item() * len(labels)
            count += len(labels)
        total, count = all_reduce_sum([total, count])
        return total / count
