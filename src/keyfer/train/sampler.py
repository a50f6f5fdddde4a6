"""The training order: global batches of one epoch, of which each process takes its rows."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from keyfer.train.distributed import Shard, world_size


class GlobalBatchSampler(Sampler[list[int]]):
    """Each epoch, the ``n`` samples in an order drawn from ``generator`` (a permutation, or with
    ``weights`` ``n`` weighted draws with replacement, for class balance), cut into global batches
    of ``batch_size``; iterating yields this process's rows (its :class:`Shard`) of each one.

    Every process holds the same generator state, so the global order does not depend on the
    number of processes. ``drop_last`` drops a final global batch smaller than ``batch_size``; a
    final one with fewer samples than processes is always dropped, as some would get none.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator,
        drop_last: bool = False,
        weights: torch.Tensor | None = None,
    ) -> None:
        self.n = n
        self.batch_size = batch_size
        self.generator = generator
        self.drop_last = drop_last
        self.weights = weights

    def shards(self) -> list[Shard]:
        """This process's shard of every global batch of an epoch, in order (no draws)."""
        full, rest = divmod(self.n, self.batch_size)
        sizes = [self.batch_size] * full
        if rest >= world_size() and not self.drop_last:
            sizes.append(rest)
        return [Shard.of(size) for size in sizes]

    def __len__(self) -> int:
        return len(self.shards())

    def __iter__(self) -> Iterator[list[int]]:
        if self.weights is not None:
            order = torch.multinomial(
                self.weights, self.n, replacement=True, generator=self.generator
            )
        else:
            order = torch.randperm(self.n, generator=self.generator)
        for step, shard in enumerate(self.shards()):
            start = step * self.batch_size
            yield order[start + shard.start : start + shard.stop].tolist()
