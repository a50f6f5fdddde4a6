"""Scale-out training with ``torchrun``: the process group, rank helpers, reductions, and each
process's rows of a global batch.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in
the environment) :func:`process_group` joins the job's process group, NCCL on CUDA and gloo on the
CPU, with each process on its own GPU (``cuda:LOCAL_RANK``). Without those variables there is one
process and every helper here is a no-op, so single-process training is unchanged.

Data parallelism keeps the single-process result: the global batch stays ``train.batch_size``,
every process draws the same global order and the same per-sample random numbers, and each takes
its :class:`Shard` of every global batch; DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from keyfer.errors import KeyferError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""The environment ``torchrun`` sets for each process it starts."""

CACHE_WAIT = timedelta(hours=6)
"""How long processes wait at a barrier while another builds a cache (a FERPlus Keypoint-Feature
cache takes 10 minutes on 2 CPU cores; NCCL's own 10-minute timeout would be too short)."""

_waiting: dist.ProcessGroup | None = None  # a gloo group with CACHE_WAIT, for barriers


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (its environment variables are set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def world_size() -> int:
    """The number of training processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank; after the group is gone, the ``RANK`` torchrun gave it."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0: the process that logs, shows progress bars and writes checkpoints."""
    return rank() == 0


def progress_disabled() -> bool | None:
    """tqdm's ``disable``: bars only on rank 0, and there only on a terminal."""
    return None if is_main_process() else True


def _process_device(device: torch.device) -> torch.device:
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise KeyferError(
            f"under torchrun each process uses cuda:LOCAL_RANK; pass --device cuda (or auto), "
            f"not {device}"
        )
    count = torch.cuda.device_count()
    if local_rank() >= count:
        raise KeyferError(
            f"LOCAL_RANK {local_rank()} has no GPU ({count} visible); "
            f"start at most {count} processes per node (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank())


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join torchrun's process group for the duration; yields this process's device.

    A CUDA ``device`` becomes ``cuda:LOCAL_RANK`` (backend NCCL); any other keeps gloo. Without
    torchrun, or inside a group the caller already set up, this only yields ``device``.
    """
    global _waiting
    if dist.is_initialized() or not launched_by_torchrun():
        yield device
        return
    device = _process_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        _waiting = dist.new_group(backend="gloo", timeout=CACHE_WAIT)
        yield device
    finally:
        _waiting = None
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (up to :data:`CACHE_WAIT`); a no-op in one process."""
    if world_size() > 1:
        dist.barrier(group=_waiting)


@contextmanager
def builders_first() -> Iterator[None]:
    """Run the body, which opens a cache and builds it when missing, on global rank 0 first; then
    on the first process of every other node, which finds rank 0's cache on a shared file system
    or builds its node's own; then on all other processes. The others wait at barriers."""
    if world_size() == 1:
        yield
        return
    turn = 0 if is_main_process() else 1 if local_rank() == 0 else 2
    for _ in range(turn):
        barrier()
    yield
    for _ in range(turn, 2):
        barrier()


def _bounds(size: int) -> list[int]:
    """Row boundaries that split ``size`` rows into near-equal contiguous parts, one per rank."""
    world = world_size()
    return [r * (size // world) + min(r, size % world) for r in range(world + 1)]


@dataclass(frozen=True)
class Shard:
    """This process's rows ``start:stop`` of a global batch of ``size`` samples."""

    size: int
    start: int
    stop: int

    @classmethod
    def of(cls, size: int) -> Shard:
        """This process's near-equal contiguous part of a global batch of ``size``."""
        bounds = _bounds(size)
        return cls(size, bounds[rank()], bounds[rank() + 1])

    @property
    def weight(self) -> float:
        """The factor on this process's mean loss that makes DDP's gradient average (over the
        processes) the gradient of the global batch's mean loss, also for unequal parts."""
        return (self.stop - self.start) * world_size() / self.size

    def rand(self, generator: torch.Generator) -> torch.Tensor:
        """(rows,) uniform draws in [0, 1): drawn for the whole global batch (every process holds
        the same generator state) and cut to this shard, so a sample's draw does not depend on
        the number of processes."""
        return torch.rand(self.size, generator=generator)[self.start : self.stop]

    def randn(self, generator: torch.Generator, *shape: int) -> torch.Tensor:
        """(rows, *shape) standard-normal draws, made like :meth:`rand`."""
        return torch.randn((self.size, *shape), generator=generator)[self.start : self.stop]


def shard_rows(n: int) -> slice:
    """This process's contiguous rows of an ``n``-row job (e.g. scoring Valid)."""
    shard = Shard.of(n)
    return slice(shard.start, shard.stop)


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """``values`` summed over the processes (in float64), e.g. a loss total and a sample count."""
    if world_size() == 1:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(total)
    return total.tolist()


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """The (n, ...) result whose :func:`shard_rows` each process computed as ``local``, in row
    order, on every process (on ``local``'s device)."""
    if world_size() == 1:
        return local
    bounds = _bounds(n)
    width = bounds[1] - bounds[0]  # the first part is the longest
    padded = local.new_zeros((width, *local.shape[1:]), device=_collective_device())
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    rows = [part[: bounds[r + 1] - bounds[r]] for r, part in enumerate(parts)]
    return torch.cat(rows).to(local.device)


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when there are several processes (its backward then
    averages the gradients over them), else ``module`` itself.

    The graph is static (the same parameters are used every step), which also covers parameters
    that never get a gradient, such as FaceMesh's presence head when it is fine-tuned.
    """
    if world_size() == 1:
        return module
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(
        module, device_ids=device_ids, gradient_as_bucket_view=True, static_graph=True
    )


def seed_process_rng(seed: int) -> None:
    """Seed the global RNG (dropout) differently in every process of a multi-process run, so
    that processes do not drop the same units; a single process keeps its stream."""
    if world_size() > 1:
        torch.manual_seed(seed + rank())
