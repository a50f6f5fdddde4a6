"""The training loop of both engines: AdamW on a one-cycle schedule, epochs of steps on this
process's shard of each global batch, and the state that resuming a run needs.

An engine (:mod:`keyfer.train.cached`, :mod:`keyfer.train.images`) is a :class:`Trainer` that
builds its networks and its :class:`~keyfer.train.sampler.GlobalBatchSampler`, gives each epoch's
batches (:meth:`Trainer.batches`) and says what one step's loss is (:meth:`Trainer.loss`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from tqdm import tqdm

from keyfer.train.config import TrainConfig
from keyfer.train.distributed import (
    Shard,
    all_reduce_sum,
    data_parallel,
    progress_disabled,
    seed_process_rng,
)
from keyfer.train.sampler import GlobalBatchSampler
from keyfer.train.speed import autocast

Batch = tuple[torch.Tensor, ...]
"""This process's part of a global batch, as an engine's :meth:`Trainer.loss` takes it: tensors
whose first has one row per sample."""

WARMUP = 0.1
"""The share of the one-cycle schedule's steps that rise to the peak learning rates."""


def one_cycle(optimizer: torch.optim.Optimizer, steps: int) -> OneCycleLR:
    """The one-cycle schedule of ``optimizer`` over ``steps`` steps: up to each parameter
    group's ``lr`` for the first :data:`WARMUP` of them, then down (cosine). torch divides by zero
    where the rise is exactly one step (10 steps), so there it rises for 1.5."""
    warmup = WARMUP if WARMUP * steps != 1 else 1.5 / steps
    peaks = [group["lr"] for group in optimizer.param_groups]
    return OneCycleLR(optimizer, peaks, total_steps=steps, pct_start=warmup)


class _StepLoss(nn.Module):
    """The module that DistributedDataParallel wraps: ``module``'s parameters, whose gradients
    it averages, and the engine's ``loss`` of a step."""

    def __init__(self, module: nn.Module, loss: Callable[[Batch, Shard], torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        self.loss = loss

    def forward(self, batch: Batch, shard: Shard) -> torch.Tensor:
        return self.loss(batch, shard)


class Trainer(ABC):
    """AdamW (``train.weight_decay``) over parameter ``groups``, each a dict of ``params`` and its
    peak ``lr``, on a :func:`one_cycle` schedule over ``train.epochs`` epochs of ``sampler``'s
    global batches; :meth:`run_epoch` trains one epoch.

    ``module`` is the network that trains (switched to training mode each epoch; its gradients
    are averaged over the processes under torchrun); ``parts`` are the modules whose weights a
    checkpoint holds, by name (``head``, and where fine-tuned ``facemesh`` and ``appearance``);
    ``generator`` draws the steps' random numbers (mirroring, perturbation) for whole global
    batches. An engine builds its networks (after seeding ``train.seed``) before calling this.
    """

    def __init__(
        self,
        train: TrainConfig,
        device: torch.device,
        module: nn.Module,
        parts: dict[str, nn.Module],
        groups: list[dict[str, Any]],
        sampler: GlobalBatchSampler,
        generator: torch.Generator,
    ) -> None:
        self.train_config = train
        self.device = device
        self.module = module
        self.parts = parts
        self.sampler = sampler
        self.generator = generator
        self.optimizer = torch.optim.AdamW(groups, weight_decay=train.weight_decay)
        self.scheduler = one_cycle(self.optimizer, train.epochs * len(sampler))
        self.step_loss = data_parallel(_StepLoss(module, self.loss), device)
        seed_process_rng(train.seed)

    @abstractmethod
    def batches(self) -> Iterator[Batch]:
        """This process's part of each global batch of an epoch, in the order of
        :meth:`GlobalBatchSampler.shards` (iterating draws the epoch's order)."""

    @abstractmethod
    def loss(self, batch: Batch, shard: Shard) -> torch.Tensor:
        """The mean loss over ``batch``, this process's ``shard`` of a global batch (a scalar)."""

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters held frozen this epoch though their group trains (none by default)."""
        return []

    def run_epoch(self) -> float:
        """One epoch; returns the mean loss over its samples and all processes."""
        self.module.train()
        total, count = 0.0, 0
        frozen = self.frozen_parameters()
        batches = zip(self.sampler.shards(), self.batches(), strict=True)
        for shard, batch in tqdm(
            batches, total=len(self.sampler), leave=False, disable=progress_disabled()
        ):
            with autocast(self.train_config, self.device):
                loss = self.step_loss(batch, shard)
            self.optimizer.zero_grad(set_to_none=True)
            (loss * shard.weight).backward()
            for parameter in frozen:  # no gradient: AdamW neither steps nor decays them
                parameter.grad = None
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item() * len(batch[0])
            count += len(batch[0])
        total, samples = all_reduce_sum([total, count])
        return total / samples

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint saves to resume from: the weights of :attr:`parts`, the optimizer's
        and scheduler's state, and the states of ``generator`` and of the sampler's."""
        return {
            **{name: part.state_dict() for name, part in self.parts.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "sampler": self.sampler.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`'s ``state``. The cached engine's checkpoints of keyfer
        0.2.0 have no ``sampler``: their sampler drew from ``generator``, as it still does."""
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.sampler.generator.set_state(state.get("sampler", state["generator"]))
