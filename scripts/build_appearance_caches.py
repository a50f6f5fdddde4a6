"""Build the appearance caches (frozen dlib branch) beside existing Keypoint-Feature caches.

Usage::

    python scripts/build_appearance_caches.py configs/ferplus.yaml [--set train_subset=3000]

The Keypoint-Feature caches of the config's train and eval splits must exist (``keyfer train``
builds them); the appearance caches go beside them, named ``<kf cache>-dlib-<taps>``.
"""

from __future__ import annotations

import argparse
import logging

from keyfer.data.datasets import training_splits
from keyfer.train.appearance_cache import CACHED_TAPS, appearance_cache
from keyfer.train.config import load_experiment
from keyfer.train.run import cache_for, dataset_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    experiment = load_experiment(args.config, args.overrides)
    for split in training_splits(experiment.dataset):
        samples = dataset_samples(experiment, split)
        cache = appearance_cache(samples, cache_for(experiment, split), CACHED_TAPS)
        logging.info("%s: %s", split, cache.root)


if __name__ == "__main__":
    main()
