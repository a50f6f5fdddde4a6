"""Prepared-crop caches for the image engine: a split's 192x192 FaceMesh input crops, made once.

Reading, cutting out (AffectNet boxes, detection and alignment), pre-cropping and resizing every
face again each epoch costs more than the network on a GPU (:func:`keyfer.data.crops.sample_crop`
makes each crop, as eval does). The cache holds the result as one uint8 array, read
memory-mapped by every data-loading worker of every epoch and run::

    DIR/crops.npy     (N, 192, 192, C) uint8, C = 1 for gray3 (replicated on reading), 3 for rgb
    DIR/readable.npy  (N,) bool, False where the image gave no crop (its crop is zeros)
    DIR/meta.json     settings, sample paths, the images left out counted by reason
                      (``left_out``: unreadable, no_face) and their ``errors``; a complete cache
                      always has it

A cache folder is named by dataset and split, colour mode, pre-crop margin and padding, and a
digest of the samples' paths and face boxes (a subset or a changed list gets its own). It is
built in a temporary folder renamed into place, so a cache that exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from keyfer.data.crops import (
    LeftOut,
    SampleLeftOut,
    left_out_counts,
    left_out_summary,
    sample_crop,
)
from keyfer.data.labels import Sample
from keyfer.faces.facemesh import CROP_SIZE
from keyfer.train.distributed import builders_first

log = logging.getLogger(__name__)


class CropCache:
    """A prepared-crop cache opened for reading (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.meta = json.loads((self.root / "meta.json").read_text())
        self.readable = np.load(self.root / "readable.npy")
        self._crops: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.readable)

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes map the file themselves instead of receiving a pickled copy.
        return {**self.__dict__, "_crops": None}

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """(B, 192, 192, 3) uint8 crops of ``rows``, in the cache's colour mode."""
        if self._crops is None:
            self._crops = np.load(self.root / "crops.npy", mmap_mode="r")
        crops = self._crops[np.asarray(rows)]
        return np.repeat(crops, 3, axis=3) if crops.shape[3] == 1 else crops


class _Prepared(Dataset):
    """Samples -> (192, 192, C) uint8 prepared crops (:func:`sample_crop`), and the reason and
    error of a sample left out ("" and "" when it gives a crop)."""

    def __init__(self, samples: Sequence[Sample], color_mode: str, margin: float, padding: str):
        self.samples = samples
        self.color_mode = color_mode
        self.margin = margin
        self.padding = padding
        self.channels = 1 if color_mode == "gray3" else 3

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, str]:
        try:
            crop = sample_crop(self.samples[index], self.color_mode, self.margin, self.padding)
            return crop[..., : self.channels], "", ""
        except SampleLeftOut as error:
            blank = np.zeros((CROP_SIZE, CROP_SIZE, self.channels), np.uint8)
            return blank, error.reason, str(error)


def build_crop_cache(
    samples: Sequence[Sample],
    out_dir: str | Path,
    color_mode: str,
    margin: float,
    padding: str,
    num_workers: int = 0,
) -> CropCache:
    """Prepare every sample's face (:func:`sample_crop`) with ``num_workers`` processes and write
    a :class:`CropCache` to ``out_dir``."""
    out = Path(out_dir)
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    try:
        _write_crops(samples, partial, out.name, color_mode, margin, padding, num_workers)
    except BaseException:  # an error or Ctrl-C: leave no half-written folder behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        partial.rename(out)
    except OSError:  # another job finished the same cache first
        shutil.rmtree(partial)
    return CropCache(out)


def _write_crops(
    samples: Sequence[Sample],
    partial: Path,
    name: str,
    color_mode: str,
    margin: float,
    padding: str,
    num_workers: int,
) -> None:
    """Write the crop cache ``name``'s files (crops, readable mask, meta) into ``partial``."""
    prepared = _Prepared(samples, color_mode, margin, padding)
    shape = (len(samples), CROP_SIZE, CROP_SIZE, prepared.channels)
    crops = np.lib.format.open_memmap(partial / "crops.npy", "w+", np.uint8, shape)
    left_out: dict[int, LeftOut] = {}
    loader = DataLoader(prepared, batch_size=64, num_workers=num_workers)
    start = 0
    for batch, reasons, messages in tqdm(
        loader, desc=f"preparing {name}", unit="batch", disable=None
    ):
        crops[start : start + len(batch)] = batch.numpy()
        for row, (reason, message) in enumerate(zip(reasons, messages, strict=True), start):
            if reason:
                left_out[row] = LeftOut(samples[row].path, reason, message)
        start += len(batch)
    crops.flush()
    del crops
    readable = np.ones(len(samples), bool)
    readable[list(left_out)] = False
    np.save(partial / "readable.npy", readable)
    if left_out:
        log.warning("%s: %s", name, left_out_summary(list(left_out.values()), len(samples)))
    meta = {
        "color_mode": color_mode, "margin": margin, "padding": padding,
        "paths": [str(s.path) for s in samples],
        "left_out": left_out_counts(left_out.values()),
        "errors": {index: left.message for index, left in left_out.items()},
    }  # fmt: skip
    (partial / "meta.json").write_text(json.dumps(meta))


def crop_cache(
    samples: Sequence[Sample],
    cache_dir: str | Path,
    name: str,
    color_mode: str,
    margin: float,
    padding: str,
    num_workers: int = 0,
) -> CropCache:
    """The prepared crops of ``samples`` (``name``: dataset and split, for the folder name) under
    ``cache_dir``, built on first use; under torchrun rank 0 builds while the others wait."""
    faces = "\n".join(f"{os.path.abspath(s.path)} {s.box} {s.faces}" for s in samples)
    digest = hashlib.sha1(faces.encode()).hexdigest()[:12]
    root = Path(cache_dir) / f"{name}-{color_mode}-m{margin:g}-{padding}-{digest}"
    with builders_first():
        if not (root / "meta.json").is_file():
            log.info("preparing the face crops %s (once)", root)
            build_crop_cache(samples, root, color_mode, margin, padding, num_workers)
        return CropCache(root)
