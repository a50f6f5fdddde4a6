"""The committed splits of the datasets that have none of their own (sfew, tfeid, muxspace).

Each such dataset has three splits: ``train`` and ``valid``, read from the lists shipped here as
package resources, ``<dataset>/{train,valid}.txt`` (one image path a line, relative to the
dataset root, sorted), and ``all``, every labelled image (for scoring a domain that a model never
trained on). ``python -m tools.make_domain_splits`` wrote the lists once, splitting the images by
group (film, performer, person: no group is in both lists), so that every figure can be
reproduced.

An adapter reads its labels (image path relative to the root -> label index) and hands them to
:func:`domain_split`, which picks the split's images. A labelled image that is in neither list (a
new image) is never put in ``train`` or ``valid``: it is skipped and counted as
:data:`NOT_IN_SPLIT`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path

from keyfer.data.labels import Sample, one_hot
from keyfer.data.split import MISSING_IMAGE, DatasetSplit, RowTally
from keyfer.errors import KeyferError

SPLITS = ("train", "valid", "all")
LISTED_SPLITS = ("train", "valid")
"""The splits read from the committed lists; ``all`` is every labelled image."""

NOT_IN_SPLIT = "not_in_split"
"""Skip reason of a labelled image that is in neither committed list (train and valid only)."""
NO_LABEL = "no_label"
"""Skip reason of an image file that has no label (no row, or a name without the label)."""


def check_split(title: str, split: str) -> None:
    """Raise a one-line :class:`KeyferError` unless ``split`` is one of :data:`SPLITS`;
    ``title`` names the dataset in it."""
    if split not in SPLITS:
        raise KeyferError(f"unknown {title} split {split!r}; choose from {', '.join(SPLITS)}")


@cache
def split_list(dataset: str, split: str) -> frozenset[str]:
    """The image paths (relative to the dataset root, ``/``-separated) of the committed list
    ``split`` (``train`` or ``valid``) of ``dataset``."""
    resource = files(__name__).joinpath(dataset).joinpath(f"{split}.txt")
    try:
        text = resource.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyferError(f"keyfer has no committed {split} list for {dataset}: {exc}") from exc
    return frozenset(line for line in text.splitlines() if line)


def domain_split(
    root: Path,
    dataset: str,
    split: str,
    labels: dict[str, int],
    tally: RowTally,
    classes: Sequence[str],
) -> DatasetSplit:
    """Split ``split`` of ``dataset`` under ``root``, from the dataset's ``labels`` (image path
    relative to ``root``, ``/``-separated -> index into :data:`~keyfer.data.labels.CLASSES`).

    The samples come in path order, with one-hot targets and ``faces="auto"`` (the images are
    photos, not tight face crops). Left out and counted in ``tally``: an image of the split whose
    file is missing (``missing_image``), and for ``train`` and ``valid`` a labelled image in
    neither list (:data:`NOT_IN_SPLIT`). ``classes``: the dataset's vocabulary.
    """
    if split == "all":
        names = sorted(labels)
    else:
        chosen = split_list(dataset, split)
        listed = frozenset().union(*(split_list(dataset, s) for s in LISTED_SPLITS))
        for name in sorted(labels.keys() - listed):
            tally.skip(NOT_IN_SPLIT, None, f"{name} is in neither committed list of {dataset}")
        for name in sorted(chosen - labels.keys()):
            if not (root / name).is_file():
                tally.skip(MISSING_IMAGE, None, f"the {split} list names {name}, not under {root}")
        names = sorted(chosen & labels.keys())
    samples = []
    for name in names:
        path = root / name
        if not path.is_file():
            tally.skip(MISSING_IMAGE, None, f"no image {path}")
            continue
        samples.append(Sample(path, labels[name], one_hot(labels[name]), faces="auto"))
    return tally.split(samples, list(classes))
