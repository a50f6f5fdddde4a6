"""Write the committed train/valid lists of sfew, tfeid and muxspace (keyfer.data.splits).

    python -m tools.make_domain_splits --root $KEYFER_DATA [--force]

ROOT holds ``sfew/``, ``tfeid/`` and ``muxspace/``. Each dataset's labelled images (its ``all``
split) are grouped by the adapter's ``group_of`` (film, performer, person), and the groups are
split deterministically: about a fifth of them, and of each class's images, in ``valid``
(:func:`grouped_split`). A list that already exists is checked, not rewritten: one
that would change is an error unless ``--force`` (published figures used the committed lists).
Prints the images per split and class, and the groups per split, as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import numpy as np

from keyfer.data import muxspace, sfew, tfeid
from keyfer.data.labels import CLASSES
from keyfer.data.split import DatasetSplit
from keyfer.data.splits import LISTED_SPLITS
from keyfer.errors import KeyferError

DOMAINS: dict[str, tuple[Callable[[Path, str], DatasetSplit], Callable[[str], str]]] = {
    "sfew": (sfew.load_sfew, sfew.group_of),
    "tfeid": (tfeid.load_tfeid, tfeid.group_of),
    "muxspace": (muxspace.load_muxspace, muxspace.group_of),
}
"""Dataset name -> (its loader, image path -> its group)."""
FOLDS = 5
"""``valid`` is one of this many folds: about a fifth of the images and groups."""
SEED = 0
LISTS = Path(str(files("keyfer.data.splits")))


def grouped_split(
    labels: dict[str, int], group_of: Callable[[str], str], seed: int = SEED
) -> dict[str, list[str]]:
    """``labels`` (image path -> label index) split into ``train`` and ``valid`` (sorted paths),
    every group in one of them.

    The groups are dealt into :data:`FOLDS` folds by the greedy rule of scikit-learn's
    ``StratifiedGroupKFold``: in an order fixed by ``seed``, then stably by the spread (std) of
    the group's images over the classes, most spread first, each group goes to the fold that
    keeps each class's share per fold most even (ties: the fold with fewer images, then the
    first). ``valid`` is the fold whose images per class are closest to a fold's share of each
    class (chi-square distance); ``train`` is the rest.
    """
    members: dict[str, list[str]] = defaultdict(list)
    for name in sorted(labels):
        members[group_of(name)].append(name)
    counts = {
        group: np.bincount([labels[n] for n in names], minlength=len(CLASSES))
        for group, names in members.items()
    }
    totals = sum(counts.values(), np.zeros(len(CLASSES)))
    present = totals > 0

    def spread(fold_counts: np.ndarray) -> float:
        """Mean over the classes of the std over the folds of a class's share in each fold."""
        return round(float(np.std(fold_counts[:, present] / totals[present], axis=0).mean()), 12)

    def trial(fold_counts: np.ndarray, fold: int, group: str) -> tuple[float, float, int]:
        added = fold_counts.copy()
        added[fold] += counts[group]
        return spread(added), float(fold_counts[fold].sum()), fold

    fold_counts = np.zeros((FOLDS, len(CLASSES)))
    folds: list[list[str]] = [[] for _ in range(FOLDS)]
    shuffled = sorted(members, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    for group in sorted(shuffled, key=lambda g: -float(np.std(counts[g]))):
        fold = min(trial(fold_counts, i, group) for i in range(FOLDS))[2]
        fold_counts[fold] += counts[group]
        folds[fold].extend(members[group])
    expected = totals[present] / FOLDS
    distance = (((fold_counts[:, present] - expected) ** 2) / expected).sum(axis=1)
    valid = int(np.argmin(distance))
    return {
        "train": sorted(n for i, names in enumerate(folds) if i != valid for n in names),
        "valid": sorted(folds[valid]),
    }


def make_lists(dataset: str, root: Path, force: bool) -> dict[str, object]:
    """Split ``dataset`` under ``root``, write (or check) its lists; returns its summary."""
    load, group_of = DOMAINS[dataset]
    data = load(root, "all")
    labels = {s.path.relative_to(root).as_posix(): s.label for s in data.samples}
    split = grouped_split(labels, group_of)
    texts = {name: "".join(f"{path}\n" for path in split[name]) for name in LISTED_SPLITS}
    paths = {name: LISTS / dataset / f"{name}.txt" for name in LISTED_SPLITS}
    changed = [name for name in LISTED_SPLITS if _read(paths[name]) != texts[name]]
    existing = [name for name in changed if paths[name].is_file()]
    if existing and not force:
        raise SystemExit(
            f"{dataset}: the committed {' and '.join(existing)} lists would change; "
            "pass --force to rewrite them"
        )
    for name in changed:
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        paths[name].write_text(texts[name], encoding="utf-8")
    return {
        "lists": "written" if changed else "unchanged",
        "skipped_all": dict(sorted(data.skipped.items())),
        **{
            name: {
                "images": len(split[name]),
                "groups": len({group_of(path) for path in split[name]}),
                "per_class": {
                    CLASSES[c]: sum(labels[p] == c for p in split[name])
                    for c in sorted(set(labels.values()))
                },
            }
            for name in LISTED_SPLITS
        },
    }


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the folder holding sfew/ ...")
    parser.add_argument("--force", action="store_true", help="rewrite lists that would change")
    args = parser.parse_args()
    try:
        summary = {name: make_lists(name, args.root / name, args.force) for name in DOMAINS}
    except KeyferError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
