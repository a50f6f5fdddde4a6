"""Save a model's per-image logits on a dataset split, and compare two such files.

Used to check that a refactor changes no prediction (the same weights before and after)::

    python -m tools.valid_predictions save --model keyfer-ferplus --dataset ferplus \
        --root DATA/ferplus --split valid --out before.npz
    python -m tools.valid_predictions compare before.npz after.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from keyfer.evaluate import dataset_logits, load_dataset
from keyfer.models.registry import create_model


def save(args: argparse.Namespace) -> None:
    """Write the (N, C) temperature-scaled logits and (N,) labels of the readable images."""
    torch.set_num_threads(args.threads)
    model = create_model(args.model).eval()
    split = load_dataset(args.dataset, args.root, args.split)
    logits, labels, unreadable = dataset_logits(model, split.samples)
    paths = [str(sample.path) for sample in split.samples]
    np.savez_compressed(
        args.out, logits=logits.numpy(), labels=labels.numpy(), paths=np.array(paths)
    )
    accuracy = float((logits.argmax(1) == labels).float().mean())
    print(
        f"{args.model}: {len(labels)} images, accuracy {accuracy:.4f}, unreadable {len(unreadable)}"
    )


def compare(args: argparse.Namespace) -> None:
    """Print how many argmax predictions differ, and the largest logit difference."""
    before, after = np.load(args.before), np.load(args.after)
    same_images = bool((before["paths"] == after["paths"]).all())
    differ = np.flatnonzero(before["logits"].argmax(1) != after["logits"].argmax(1))
    result = {
        "before": str(args.before), "after": str(args.after), "images": len(before["labels"]),
        "same_images": same_images, "predictions_differing": len(differ),
        "differing_paths": before["paths"][differ].tolist(),
        "max_abs_logit_difference": float(np.abs(before["logits"] - after["logits"]).max()),
    }  # fmt: skip
    print(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True)
    saver = commands.add_parser("save")
    saver.add_argument("--model", required=True)
    saver.add_argument("--dataset", default="ferplus")
    saver.add_argument("--root", type=Path, required=True)
    saver.add_argument("--split", default="valid")
    saver.add_argument("--threads", type=int, default=2)
    saver.add_argument("--out", type=Path, required=True)
    saver.set_defaults(run=save)
    comparer = commands.add_parser("compare")
    comparer.add_argument("before", type=Path)
    comparer.add_argument("after", type=Path)
    comparer.set_defaults(run=compare)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
