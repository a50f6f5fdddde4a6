"""The data of an experiment's sources (:class:`~keyfer.train.config.Source`): each one's labelled
samples of its train and eval splits, its classes, and the stem of its caches' names.

A source's classes are its dataset's (:attr:`keyfer.data.split.DatasetSplit.classes`, canonical
names): the loss of its samples (:mod:`keyfer.train.losses`) and the scores of its eval split are
restricted to them. A cache is named by dataset and split, plus the train subset and the faces
mode where those are not the dataset's own, so caches of other crops never mix and the caches
built before sources existed (``ferplus-train-ibug68-s0.05-m0.2``) are found as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from keyfer.data.datasets import load_split
from keyfer.data.labels import CLASSES, Sample
from keyfer.train.config import Experiment, Source


@dataclass
class SourceData:
    """A source's ``train`` samples (its ``train_subset`` drawn, with seed 0) and ``valid``
    samples (of its ``eval_split``), both with soft targets where the dataset has votes and the
    source's faces mode; ``classes``: its dataset's classes; ``faces_tag``: ``-<mode>`` when its
    faces mode is not the one the dataset gives its samples, else empty."""

    source: Source
    train: list[Sample]
    valid: list[Sample]
    classes: list[str]
    faces_tag: str

    @property
    def name(self) -> str:
        return str(self.source.name)

    def cache_stem(self, split: str) -> str:
        """``<dataset>-<split>[-n<train_subset>][-<faces mode>]``: the start of the names of the
        caches of its ``split`` (the train split or the eval split)."""
        source = self.source
        subset = f"-n{source.train_subset}" if split == source.split and source.train_subset else ""
        return f"{source.dataset}-{split}{subset}{self.faces_tag}"


def _samples(source: Source, split: str) -> tuple[list[Sample], list[str], str]:
    """The samples of ``split`` of ``source`` in its faces mode, its dataset's classes, and the
    faces tag (see :class:`SourceData`)."""
    # Soft targets are kept where the dataset has votes; majority training reads the hard labels.
    data = load_split(source.dataset, source.root, split, "probability", source.faces)
    return data.samples, data.classes, f"-{source.faces}" if data.faces_overridden else ""


def source_data(source: Source) -> SourceData:
    """The :class:`SourceData` of ``source``, its splits read from its root."""
    assert source.split is not None and source.eval_split is not None  # set when read
    train, classes, tag = _samples(source, source.split)
    if source.train_subset:
        keep = np.random.default_rng(0).permutation(len(train))[: source.train_subset]
        train = [train[i] for i in sorted(keep)]
    valid = _samples(source, source.eval_split)[0]
    return SourceData(source, train, valid, classes, tag)


def experiment_sources(experiment: Experiment) -> list[SourceData]:
    """The :class:`SourceData` of each of the experiment's sources, in order."""
    return [source_data(source) for source in experiment.sources]


def source_classes(sources: list[SourceData]) -> torch.Tensor | None:
    """(S, n_classes) bool: the classes of :data:`CLASSES` that each source has; None when every
    source has them all (nothing to restrict)."""
    allowed = torch.tensor([[c in data.classes for c in CLASSES] for data in sources])
    return None if bool(allowed.all()) else allowed
