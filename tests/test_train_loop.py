"""The training loop both engines share (keyfer.train.loop): the one-cycle schedule, an epoch's
steps and its mean loss, and the state that resumes a run where it stopped, in either engine."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from keyfer.data.labels import Sample, one_hot
from keyfer.nkf.config import ModelConfig
from keyfer.train.cached import CachedData, CachedTrainer
from keyfer.train.config import Experiment, ImagesConfig, TrainConfig
from keyfer.train.crops import build_crop_cache
from keyfer.train.distributed import Shard
from keyfer.train.images import ImageTrainer
from keyfer.train.loop import Batch, Trainer, one_cycle
from keyfer.train.sampler import GlobalBatchSampler
from tests.dataset_fixtures import make_rafdb

# No dropout: its masks come from the global RNG, which a checkpoint does not hold.
SMALL = ModelConfig(dim=8, hidden=16, dropout=0.0)
FIELDS = {"head", "optimizer", "scheduler", "generator", "sampler"}


def _cache_rows(n: int = 13) -> CachedData:
    """``n`` random Keypoint-Feature cache rows of the default taps (352 channels)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 8, (n,), generator=generator)
    return CachedData(
        torch.randn(n, 4, 68, 352, generator=generator).half(),
        torch.randn(n, 2, 128, generator=generator).half(),
        labels,
        torch.eye(8)[labels],
    )


def _image_trainer(tmp_path: Path, train: TrainConfig, model: ModelConfig = SMALL) -> ImageTrainer:
    """An image-engine trainer on four copies of one real face."""
    face = make_rafdb(tmp_path / "rafdb") / "Image/aligned/train_00001_aligned.jpg"
    samples = [Sample(face, label, one_hot(label)) for label in (0, 1, 1, 4)]
    crops = build_crop_cache(samples, tmp_path / "crops", "gray3", 0.2, "edge")
    return ImageTrainer(Experiment(model=model, train=train), samples, crops, torch.device("cpu"))


class _Line(Trainer):
    """A toy engine: a 1-to-1 linear layer fitted to ``y`` at ``x`` by mean squared error; it
    records each step's loss and batch size."""

    def __init__(self, train: TrainConfig, x: torch.Tensor, y: torch.Tensor) -> None:
        torch.manual_seed(train.seed)
        self.x, self.y, self.steps = x, y, []
        self.line = nn.Linear(1, 1)
        generator = torch.Generator().manual_seed(train.seed)
        sampler = GlobalBatchSampler(len(x), train.batch_size, generator)
        groups = [{"params": self.line.parameters(), "lr": train.lr}]
        parts: dict[str, nn.Module] = {"head": self.line}
        super().__init__(train, torch.device("cpu"), self.line, parts, groups, sampler, generator)

    def batches(self) -> Iterator[Batch]:
        return ((torch.tensor(rows),) for rows in self.sampler)

    def loss(self, batch: Batch, shard: Shard) -> torch.Tensor:
        (index,) = batch
        loss = F.mse_loss(self.line(self.x[index]), self.y[index])
        self.steps.append((loss.item(), len(index)))
        return loss


@pytest.mark.parametrize("steps", [1, 7, 10, 40])
def test_one_cycle_rises_to_each_groups_peak_then_falls(steps: int):
    """A tenth of the steps rising (torch divides by zero at exactly one: 10 steps rise 1.5)."""
    parameters = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
    groups = [{"params": [parameters[0]], "lr": 0.2}, {"params": [parameters[1]], "lr": 0.02}]
    optimizer = torch.optim.AdamW(groups)
    schedule = one_cycle(optimizer, steps)
    rates = []
    for _ in range(steps):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    head, other = (torch.tensor(group) for group in zip(*rates, strict=True))
    assert torch.allclose(other, head / 10)  # each group on its own peak
    assert head.max() <= 0.2 + 1e-9
    if steps >= 10:  # a rise of a step or more starts at the peak / 25 (OneCycleLR's div_factor)
        assert head[0] == pytest.approx(0.2 / 25) and head[-1] < head[0]
    if steps == 40:  # the peak at step 0.1 x 40 - 1
        assert head.max() == pytest.approx(0.2) and int(head.argmax()) == 3


def test_an_epoch_steps_on_every_batch_and_returns_the_mean_loss_per_sample():
    x = torch.linspace(-1, 1, 10)[:, None]
    engine = _Line(TrainConfig(epochs=2, batch_size=4, lr=0.1), x, 3 * x)
    loss = engine.run_epoch()
    assert [n for _, n in engine.steps] == [4, 4, 2]
    assert loss == pytest.approx(sum(step * n for step, n in engine.steps) / 10)
    assert engine.scheduler.last_epoch == 3
    assert set(engine.state_dict()) == FIELDS


@pytest.mark.parametrize("with_sampler", [True, False], ids=["now", "keyfer-0.2.0"])
def test_a_resumed_cached_run_matches_an_uninterrupted_one(with_sampler: bool):
    """Resumed after epoch 1 of 3, from today's state or one without ``sampler`` (keyfer 0.2.0's
    cached checkpoints, whose sampler drew from ``generator``, as it still does)."""
    train, data = TrainConfig(epochs=3, batch_size=5), _cache_rows()
    whole = CachedTrainer(SMALL, train, data)
    losses = [whole.run_epoch() for _ in range(3)]
    first = CachedTrainer(SMALL, train, data)
    first.run_epoch()
    state = copy.deepcopy(first.state_dict())
    assert set(state) == FIELDS
    if not with_sampler:
        del state["sampler"]
    resumed = CachedTrainer(SMALL, train, data)
    resumed.load_state_dict(state)
    assert [resumed.run_epoch() for _ in range(2)] == losses[1:]
    for key, value in whole.head.state_dict().items():
        assert torch.equal(resumed.head.state_dict()[key], value), key


def test_a_resumed_image_run_matches_an_uninterrupted_one(tmp_path: Path):
    """The same fields as the cached engine's, and the sampler's state brings back the order and
    the augmentation of the epochs after the checkpoint."""
    train = TrainConfig(epochs=2, batch_size=2, images=ImagesConfig(num_workers=0))
    whole = _image_trainer(tmp_path, train)
    losses = [whole.run_epoch() for _ in range(2)]
    first = _image_trainer(tmp_path, train)
    first.run_epoch()
    state = copy.deepcopy(first.state_dict())
    assert set(state) == FIELDS
    resumed = _image_trainer(tmp_path, train)
    resumed.load_state_dict(state)
    assert resumed.run_epoch() == losses[1]
    for key, value in whole.model.head.state_dict().items():
        assert torch.equal(resumed.model.head.state_dict()[key], value), key


def test_the_image_engine_saves_what_it_fine_tunes(tmp_path: Path):
    train = TrainConfig(epochs=1, batch_size=2, images=ImagesConfig(num_workers=0))
    tuned = ModelConfig(dim=8, hidden=16, finetune_alignment=True)
    trainer = _image_trainer(tmp_path, train, tuned)
    assert set(trainer.state_dict()) == FIELDS | {"facemesh"}
    peaks = [group["max_lr"] for group in trainer.optimizer.param_groups]
    assert peaks == [train.lr, train.images.alignment_lr]
