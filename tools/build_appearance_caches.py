"""Build the appearance caches (frozen dlib branch) beside existing Keypoint-Feature caches.

Usage::

    python -m tools.build_appearance_caches ferplus_appearance \
        [--set train_subset=3000]

The config (a shipped config's name or a YAML path) needs an appearance branch. The
Keypoint-Feature caches of each source's train and eval splits are built first if missing; the
appearance caches go beside them, named ``<kf cache>-dlib-<taps>`` (what ``keyfer train`` would
build on its first run).
"""

from __future__ import annotations

import argparse
import logging

from keyfer.train.config import find_config, load_experiment
from keyfer.train.run import source_caches
from keyfer.train.sources import experiment_sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    experiment = load_experiment(find_config(args.config), args.overrides)
    if experiment.model.appearance == "none":
        raise SystemExit(f"{args.config} has no appearance branch (model.appearance is none)")
    for source in experiment_sources(experiment):
        for split in (str(source.source.split), str(source.source.eval_split)):
            cache = source_caches(experiment, source, split)[1]
            assert cache is not None  # the model has an appearance branch
            logging.info("%s %s: %s", source.name, split, cache.root)


if __name__ == "__main__":
    main()
