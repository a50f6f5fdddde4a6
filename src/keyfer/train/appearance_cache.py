"""Appearance caches: the frozen dlib branch's features beside a Keypoint-Feature cache.

For training heads with a frozen appearance branch (:mod:`keyfer.nkf.appearance`) on the CPU.
The branch runs once per image and view, on the same crops, landmarks and perturbation draws as
the Keypoint-Feature cache it extends (same sample order, batch size and seed), so row i and view
v of both caches describe the same face::

    DIR/app_kf.npy      (N, 4, K, C) float16, views as in :data:`keyfer.train.cache.VIEWS`
    DIR/app_global.npy  (N, 2, 256) float16 (crop, mirror)
    DIR/meta.json       the taps and the Keypoint-Feature cache it extends
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from keyfer.data.labels import Sample
from keyfer.errors import KeyferError
from keyfer.faces.facemesh import FaceMesh
from keyfer.faces.ibug68 import MESH_TO_IBUG68, ibug68, inter_ocular_distance
from keyfer.nkf.appearance import GLOBAL_CHANNELS, AppearanceBranch, appearance_channels
from keyfer.nkf.model import keypoint_indices
from keyfer.nkf.perturbation import perturb_keypoints
from keyfer.train.cache import VIEWS, KFCache, load_crops

CACHED_TAPS = ("level3", "level2", "level1")
"""The taps an appearance cache holds by default: the model's choice of them needs no rebuild."""


@dataclass
class AppearanceCache:
    """An appearance cache opened for reading; arrays are memory-mapped."""

    root: Path
    kf: np.ndarray
    global_feature: np.ndarray
    meta: dict

    @classmethod
    def open(cls, root: str | Path) -> AppearanceCache:
        root = Path(root)
        return cls(
            root,
            np.load(root / "app_kf.npy", mmap_mode="r"),
            np.load(root / "app_global.npy", mmap_mode="r"),
            json.loads((root / "meta.json").read_text()),
        )

    def tap_channels(self, taps: Sequence[str]) -> np.ndarray:
        """Channel indices of the KF axis for a subset of the cached taps, in cached order."""
        cached = self.meta["taps"]
        missing = set(taps) - set(cached)
        if missing:
            raise KeyferError(f"{self.root} has no appearance taps {sorted(missing)}; rebuild it")
        starts = np.cumsum([0] + [appearance_channels([name]) for name in cached])
        return np.concatenate(
            [np.arange(starts[i], starts[i + 1]) for i, name in enumerate(cached) if name in taps]
        )


@torch.inference_mode()
def build_appearance_cache(
    samples: Sequence[Sample],
    kf_cache: KFCache,
    out_dir: str | Path,
    taps: Sequence[str],
    batch_size: int = 64,
) -> AppearanceCache:
    """Run the frozen appearance branch over the samples of ``kf_cache`` (the same list it was
    built from) and write an :class:`AppearanceCache` of ``taps``."""
    meta = kf_cache.meta
    if [Path(s.path).resolve() for s in samples] != [Path(p).resolve() for p in meta["paths"]]:
        raise KeyferError(f"the samples are not those of {kf_cache.root}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    facemesh, branch = FaceMesh.from_pretrained(), AppearanceBranch(taps)
    index = torch.tensor(keypoint_indices(meta["keypoints"]))
    n, k, c = len(samples), len(index), appearance_channels(taps)
    app_kf = np.lib.format.open_memmap(out / "app_kf.npy", "w+", np.float16, (n, len(VIEWS), k, c))
    shape = (n, 2, GLOBAL_CHANNELS)
    app_global = np.lib.format.open_memmap(out / "app_global.npy", "w+", np.float16, shape)
    # The Keypoint-Feature cache's draws: same seed, batches and order of calls.
    generator = torch.Generator().manual_seed(meta["seed"])
    color_mode = meta.get("color_mode", "gray3")
    for start in tqdm(range(0, n, batch_size), desc=f"caching {out.name}", unit="batch"):
        batch = samples[start : start + batch_size]
        crops, _ = load_crops(batch, color_mode, meta["margin"], meta["padding"])
        stop = start + len(batch)
        for view, images in enumerate((crops, crops.flip(-1))):
            mesh = facemesh(images).mesh[..., :2]
            points = mesh[:, index]
            iod = inter_ocular_distance(mesh[:, list(MESH_TO_IBUG68)])
            moved = perturb_keypoints(points, iod, meta["sigma"], generator)
            clean = branch(images, ibug68(mesh), points)
            app_kf[start:stop, view] = clean.keypoint_features
            app_global[start:stop, view] = clean.global_feature
            moved_features = branch.sample(clean, moved)
            app_kf[start:stop, view + 2] = moved_features
    app_kf.flush()
    app_global.flush()
    record = {"taps": list(taps), "extends": str(kf_cache.root), "n": n}
    (out / "meta.json").write_text(json.dumps(record))
    return AppearanceCache.open(out)


def appearance_cache_root(kf_cache: KFCache, taps: Sequence[str]) -> Path:
    """Where the appearance cache of ``taps`` beside ``kf_cache`` lives:
    ``<its name>-dlib-<taps>``."""
    return kf_cache.root.with_name(f"{kf_cache.root.name}-dlib-{'-'.join(taps)}")
