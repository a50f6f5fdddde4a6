"""The training order: global batches of one epoch, of which each process takes its rows, and
the rule that balances the draws by source and by class.

The rule (:func:`draw_weights`): with several sources, each draw picks a source with
probability ``weight / sum(weights)`` (:attr:`keyfer.train.config.Source.weight`); with
``train.balanced_sampler`` then a class uniformly among the classes that source has training
images of, then one of its images of that class uniformly; without it, one of the source's
images uniformly. Draws are with replacement, and an epoch is as many draws as there are
training images in all sources together. With one source, ``balanced_sampler`` draws every class
equally often (:func:`keyfer.data.sampling.class_balanced_weights`), and without it an epoch is a
permutation of the images, as before sources existed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from keyfer.data.labels import CLASSES
from keyfer.data.sampling import class_balanced_weights
from keyfer.train.distributed import Shard, world_size


def draw_weights(
    source: torch.Tensor, labels: torch.Tensor, weights: Sequence[float], balanced: bool
) -> torch.Tensor | None:
    """(N,) float64 probabilities of drawing each training row by the module's rule, from each
    row's (N,) int64 ``source`` index and label index into :data:`CLASSES` and the sources'
    ``weights``; None for one source without ``balanced`` (a permutation each epoch)."""
    if len(weights) == 1:
        return class_balanced_weights(labels) if balanced else None
    share = torch.tensor(weights, dtype=torch.float64)
    share = share / share.sum()
    groups = source * len(CLASSES) + labels if balanced else source
    size = len(weights) * (len(CLASSES) if balanced else 1)
    counts = torch.bincount(groups, minlength=size).double()
    per_source = torch.ones(len(weights), dtype=torch.float64)
    if balanced:  # the number of classes each source has images of
        per_source = (counts.reshape(-1, len(CLASSES)) > 0).sum(1).double()
    return share[source] / per_source[source] / counts[groups]


def drawn_counts(
    drawn: torch.Tensor, source: torch.Tensor, labels: torch.Tensor, names: Sequence[str]
) -> dict[str, dict]:
    """How many of the rows ``drawn`` (indices into the (N,) ``source`` and ``labels`` of the
    training rows) came from each source: ``{name: {"images": n, "classes": {class: n}}}``, with
    each class that the source has training images of."""
    groups = source * len(CLASSES) + labels
    size = len(names) * len(CLASSES)
    present = torch.bincount(groups, minlength=size).reshape(len(names), len(CLASSES)) > 0
    counts = torch.bincount(groups[drawn], minlength=size).reshape(len(names), len(CLASSES))
    return {
        name: {
            "images": int(counts[s].sum()),
            "classes": {c: int(counts[s, i]) for i, c in enumerate(CLASSES) if present[s, i]},
        }
        for s, name in enumerate(names)
    }


class GlobalBatchSampler(Sampler[list[int]]):
    """Each epoch, the ``n`` samples in an order drawn from ``generator`` (a permutation, or with
    ``weights`` ``n`` weighted draws with replacement, as :func:`draw_weights` gives them), cut
    into global batches of ``batch_size``; iterating yields this process's rows (its
    :class:`Shard`) of each one, and :attr:`drawn` holds the epoch's rows of all processes.

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
        self.drawn = torch.zeros(0, dtype=torch.long)

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
        shards = self.shards()
        self.drawn = order[: sum(shard.size for shard in shards)]
        for step, shard in enumerate(shards):
            start = step * self.batch_size
            yield order[start + shard.start : start + shard.stop].tolist()
