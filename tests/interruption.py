"""A training run that crashes part-way, for the tests that resume one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from keyfer.train.cached import CachedTrainer


@contextmanager
def interrupted_in_second_epoch() -> Iterator[None]:
    """Inside, every cached-engine run stops with KeyboardInterrupt in its second epoch, after
    the first epoch's checkpoint is written: a crashed run to resume from."""
    original, calls = CachedTrainer.run_epoch, []

    def stop_in_second_epoch(self: CachedTrainer) -> float:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self)

    CachedTrainer.run_epoch = stop_in_second_epoch  # type: ignore[method-assign]
    try:
        yield
    finally:
        CachedTrainer.run_epoch = original  # type: ignore[method-assign]
