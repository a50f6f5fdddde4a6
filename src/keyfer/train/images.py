"""Image-level NKF training: augmented face crops through FaceMesh (frozen or fine-tuned).

Slower than the cached engine, but it is the only way to fine-tune the alignment network, and it
sees fresh augmentation every epoch. bf16 autocast is used on CUDA.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from keyfer.data.augment import AugmentConfig, augment_face
from keyfer.data.labels import Sample
from keyfer.data.precrop import prepare_face
from keyfer.faces.facemesh import CROP_SIZE, FaceMesh
from keyfer.io.images import read_image
from keyfer.nkf.keypoint_features import sample_keypoint_features
from keyfer.nkf.model import NKFModel
from keyfer.nkf.perturbation import perturb_keypoints
from keyfer.train.checkpoint import load_checkpoint
from keyfer.train.config import Experiment
from keyfer.train.losses import nkf_loss


class FaceCropDataset(Dataset):
    """Pre-cropped labelled faces -> ((3, 192, 192) float crops in [0, 1], label, (8,) target)."""

    def __init__(self, samples: list[Sample], color_mode: str, augment: AugmentConfig | None):
        self.samples = samples
        self.color_mode = color_mode
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = read_image(sample.path)
        if self.augment is not None:
            # torch seeds each worker per epoch from the main generator: reproducible draws.
            rng = np.random.default_rng([torch.initial_seed() % 2**63, index])
            image = augment_face(image, rng, self.augment)
        crop = prepare_face(image, self.color_mode)
        tensor = torch.from_numpy(crop).permute(2, 0, 1).float() / 255.0
        return tensor, sample.label, torch.from_numpy(sample.target)


class ImageTrainer:
    """AdamW + one-cycle over the head (``lr``) and a fine-tuned FaceMesh (``alignment_lr``)."""

    def __init__(self, experiment: Experiment, samples: list[Sample], device: torch.device):
        train = experiment.train
        torch.manual_seed(train.seed)
        self.experiment = experiment
        self.device = device
        self.model = NKFModel(experiment.model).to(device)
        if train.init_from:
            _, state = load_checkpoint(train.init_from)
            self.model.head.load_state_dict(state["head"])
        finetune = experiment.model.finetune_alignment
        self.teacher = None
        if finetune and train.distill_weight > 0:
            self.teacher = FaceMesh.from_pretrained().to(device)
        groups = [{"params": self.model.head.parameters(), "lr": train.lr}]
        if finetune:
            groups.append({"params": self.model.facemesh.parameters(), "lr": train.alignment_lr})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=train.weight_decay)
        augment = AugmentConfig(flip=train.mirror) if train.augment else None
        generator = torch.Generator().manual_seed(train.seed)
        self.loader = DataLoader(
            FaceCropDataset(samples, experiment.model.color_mode, augment),
            batch_size=train.batch_size,
            shuffle=True,
            num_workers=train.num_workers,
            generator=generator,
            drop_last=len(samples) > train.batch_size,
            persistent_workers=train.num_workers > 0,
        )
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            [g["lr"] for g in groups],
            total_steps=train.epochs * len(self.loader),
            pct_start=0.1,
        )
        self.generator = torch.Generator().manual_seed(train.seed + 1)

    def state_dict(self) -> dict:
        state = {
            "head": self.model.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
        }
        if self.experiment.model.finetune_alignment:
            state["facemesh"] = self.model.facemesh.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.head.load_state_dict(state["head"])
        if "facemesh" in state:
            self.model.facemesh.load_state_dict(state["facemesh"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])

    def _loss(self, crops: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor):
        train, model = self.experiment.train, self.model
        features = model.features(crops)
        moved_points = perturb_keypoints(
            features.keypoints, features.iod, train.sigma, self.generator
        )

        def logits_for(moved: torch.Tensor) -> torch.Tensor:
            where = moved.to(crops.device)[:, None, None]
            points = torch.where(where, moved_points, features.keypoints)
            kf = sample_keypoint_features(features.taps, points, self.experiment.model.taps)
            return model.head(kf, features.global_feature).logits.float()

        loss = nkf_loss(
            train, logits_for, labels.to(crops.device), targets.to(crops.device), self.generator
        )
        if self.teacher is not None:
            with torch.no_grad():
                reference = self.teacher(crops).mesh[..., :2]
            drift = F.mse_loss(
                features.mesh[..., :2].float() / CROP_SIZE, reference.float() / CROP_SIZE
            )
            loss = loss + train.distill_weight * drift
        return loss

    def run_epoch(self) -> float:
        """One pass over the training images; returns the mean loss."""
        self.model.train()
        total, count = 0.0, 0
        autocast = torch.autocast(
            self.device.type, torch.bfloat16, enabled=self.device.type == "cuda"
        )
        for crops, labels, targets in tqdm(self.loader, leave=False, disable=None):
            with autocast:
                loss = self._loss(crops.to(self.device), labels, targets.float())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item() * len(labels)
            count += len(labels)
        return total / count
