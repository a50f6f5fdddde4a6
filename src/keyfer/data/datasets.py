"""The dataset registry: one name per supported on-disk format (docs/method.md,
'Datasets and splits'), one loader.

=============  =======  =====================================  =============  ==========
name           classes  splits                                 train on       evaluate on
=============  =======  =====================================  =============  ==========
``ferplus``    8        train, valid, test                     train          valid
``fer2013``    7        train, publictest, privatetest (CSV);  train          publictest
                        train, test (class folders)
``rafdb``      7        train, test                            train          test
``affectnet``  8        train, validation                      train          validation
``affectnet7`` 7        train, validation                      train          validation
``sfew``       7        train, valid (by film), all            train          valid
``tfeid``      7        train, valid (by performer), all       train          valid
``muxspace``   8        train, valid (by person), all          train          valid
``folder``     folders  all (``--root`` is the class folders)  --             --
=============  =======  =====================================  =============  ==========

The ``train`` and ``valid`` splits of sfew, tfeid and muxspace are keyfer's committed lists
(:mod:`keyfer.data.splits`); their ``all`` is every labelled image.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from keyfer.data.affectnet import load_affectnet
from keyfer.data.fer2013 import SPLITS as FER2013_SPLITS
from keyfer.data.fer2013 import load_fer2013
from keyfer.data.ferplus import LABEL_MODES, load_ferplus
from keyfer.data.folder import load_folder
from keyfer.data.labels import CLASSES, FACES_MODES
from keyfer.data.muxspace import load_muxspace
from keyfer.data.rafdb import load_rafdb
from keyfer.data.roots import data_root, missing_root_hint
from keyfer.data.sfew import load_sfew
from keyfer.data.split import MALFORMED_ROW, MISSING_IMAGE, DatasetSplit
from keyfer.data.splits import SPLITS as DOMAIN_SPLITS
from keyfer.data.tfeid import load_tfeid
from keyfer.errors import KeyferError


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's split names and, for training, its train and evaluation splits (None for a
    dataset without them). ``load(root, split, label_mode)`` reads one split."""

    splits: tuple[str, ...]
    train_split: str | None
    eval_split: str | None
    load: Callable[[Path, str, str], DatasetSplit]


def _ferplus(root: Path, split: str, label_mode: str) -> DatasetSplit:
    data = load_ferplus(root, split, label_mode)
    skipped = Counter({MISSING_IMAGE: len(data.missing), MALFORMED_ROW: len(data.malformed)})
    return DatasetSplit(data.samples, list(CLASSES), +skipped, data.dropped)


def _folder(root: Path, split: str, label_mode: str) -> DatasetSplit:
    samples = load_folder(root)
    return DatasetSplit(samples, [CLASSES[i] for i in sorted({s.label for s in samples})])


def _hard_labels(
    load: Callable[[Path, str], DatasetSplit],
) -> Callable[[Path, str, str], DatasetSplit]:
    """A loader of a dataset without votes: every label mode gives one-hot targets."""
    return lambda root, split, label_mode: load(root, split)


DATASETS: dict[str, DatasetSpec] = {
    "ferplus": DatasetSpec(("train", "valid", "test"), "train", "valid", _ferplus),
    "fer2013": DatasetSpec(FER2013_SPLITS, "train", "publictest", _hard_labels(load_fer2013)),
    "rafdb": DatasetSpec(("train", "test"), "train", "test", _hard_labels(load_rafdb)),
    "affectnet": DatasetSpec(
        ("train", "validation"), "train", "validation", _hard_labels(load_affectnet)
    ),
    "affectnet7": DatasetSpec(
        ("train", "validation"),
        "train",
        "validation",
        _hard_labels(partial(load_affectnet, num_classes=7)),
    ),
    "sfew": DatasetSpec(DOMAIN_SPLITS, "train", "valid", _hard_labels(load_sfew)),
    "tfeid": DatasetSpec(DOMAIN_SPLITS, "train", "valid", _hard_labels(load_tfeid)),
    "muxspace": DatasetSpec(DOMAIN_SPLITS, "train", "valid", _hard_labels(load_muxspace)),
    "folder": DatasetSpec(("all",), None, None, _folder),
}
"""Dataset name (the CLI's ``--dataset``) -> its :class:`DatasetSpec`."""


def dataset_spec(dataset: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``dataset``; an unknown name lists the known ones."""
    try:
        return DATASETS[dataset]
    except KeyError:
        raise KeyferError(
            f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}"
        ) from None


def load_split(
    dataset: str,
    root: str | Path,
    split: str | None,
    label_mode: str = "majority",
    faces: str | None = None,
) -> DatasetSplit:
    """Split ``split`` of ``dataset`` under ``root`` (the dataset's root as distributed; a
    relative one is under ``KEYFER_DATA`` when that is set, :func:`keyfer.data.roots.data_root`).

    ``split`` may be None only for ``folder`` (whose one split is ``all``). ``label_mode``:
    ``majority`` (one-hot targets) or ``probability`` (soft targets from the annotators' votes,
    which only FERPlus has; one-hot elsewhere). The split's ``classes`` are the dataset's
    canonical classes (for ``folder``, those of its class folders). ``faces`` (one of
    :data:`~keyfer.data.labels.FACES_MODES`) sets every sample's faces mode; None keeps the
    adapter's own (``precropped`` for FERPlus, FER2013, RAF-DB aligned and AffectNet's boxes,
    ``auto`` for folders).
    """
    spec = dataset_spec(dataset)
    if label_mode not in LABEL_MODES:
        raise KeyferError(f"unknown label mode {label_mode!r}; choose from {LABEL_MODES}")
    if faces is not None and faces not in FACES_MODES:
        raise KeyferError(f"unknown faces mode {faces!r}; choose from {', '.join(FACES_MODES)}")
    if split is None and spec.splits == ("all",):
        split = "all"
    if split not in spec.splits:
        raise KeyferError(
            f"{dataset} has no split {split!r}; choose --split from {', '.join(spec.splits)}"
        )
    root = data_root(root)
    if not root.is_dir():
        raise KeyferError(f"the {dataset} root {root} is not a folder; {missing_root_hint()}")
    data = spec.load(root, split, label_mode)
    if faces is not None and any(sample.faces != faces for sample in data.samples):
        data.samples = [replace(sample, faces=faces) for sample in data.samples]
        data.faces_overridden = True
    return data


def training_splits(dataset: str) -> tuple[str, str]:
    """(train split, evaluation split) of ``dataset``; a dataset without them is an error."""
    spec = dataset_spec(dataset)
    if spec.train_split is None or spec.eval_split is None:
        trainable = [name for name, s in DATASETS.items() if s.train_split is not None]
        raise KeyferError(
            f"cannot train on {dataset!r}: it has no train and evaluation splits; "
            f"use one of {', '.join(trainable)}"
        )
    return spec.train_split, spec.eval_split
