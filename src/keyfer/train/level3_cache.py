"""Level-3 caches: dlib's frozen lower levels run once, so that its upper levels can be fine-tuned
on the CPU (the cached engine with ``finetune_appearance``, :mod:`keyfer.train.upper_levels`).

Beside a Keypoint-Feature cache, for the same rows and the same landmark draws (same seed, batch
size and order of calls, as :mod:`keyfer.train.appearance_cache`), per image::

    DIR/level3.npy       (N, 2, 64, 17, 17) float16: dlib's level3 map of the chip of the crop
                         and of its mirror (stem, level4 and level3 of the pretrained network)
    DIR/chip_points.npy  (N, 4, K, 2) float32: the keypoints in chip pixels (a pixel's centre at
                         integer + 0.5), views as in :data:`keyfer.train.cache.VIEWS`
    DIR/meta.json        the Keypoint-Feature cache it extends

The crops come from the image engine's prepared-crop cache of the same samples (the crops the
Keypoint-Feature cache was built from). Caching the lower levels freezes them and the pixels:
no pixel augmentation reaches the fine-tuned levels, only mirroring and landmark perturbation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from keyfer.errors import KeyferError
from keyfer.faces.dlib_resnet import TAPS, DlibResNet
from keyfer.faces.facemesh import FaceMesh
from keyfer.faces.ibug68 import MESH_TO_IBUG68, ibug68, inter_ocular_distance
from keyfer.geometry import apply_affine
from keyfer.nkf.appearance import extract_chips, fit_crop_to_chip
from keyfer.nkf.model import keypoint_indices
from keyfer.nkf.perturbation import perturb_keypoints
from keyfer.train.cache import VIEWS, KFCache
from keyfer.train.crops import CropCache

CACHED_LEVEL = "level3"
"""The dlib tap whose map is cached; the levels after it are the ones fine-tuned."""


@dataclass
class Level3Cache:
    """A level-3 cache opened for reading; arrays are memory-mapped (see the module docstring)."""

    root: Path
    level3: np.ndarray
    chip_points: np.ndarray
    meta: dict

    @classmethod
    def open(cls, root: str | Path) -> Level3Cache:
        root = Path(root)
        return cls(
            root,
            np.load(root / "level3.npy", mmap_mode="r"),
            np.load(root / "chip_points.npy", mmap_mode="r"),
            json.loads((root / "meta.json").read_text()),
        )


def level3_cache_root(kf_cache: KFCache) -> Path:
    """Where the level-3 cache beside ``kf_cache`` lives: ``<its name>-dlib-level3-maps``."""
    return kf_cache.root.with_name(f"{kf_cache.root.name}-dlib-{CACHED_LEVEL}-maps")


@torch.inference_mode()
def build_level3_cache(
    kf_cache: KFCache, crops: CropCache, out_dir: str | Path, batch_size: int = 64
) -> Level3Cache:
    """Run FaceMesh and dlib's lower levels over the crops of ``kf_cache``'s samples (``crops``,
    their prepared-crop cache, row for row) and write a :class:`Level3Cache`."""
    meta = kf_cache.meta
    if [Path(p).resolve() for p in crops.meta["paths"]] != [
        Path(p).resolve() for p in meta["paths"]
    ]:
        raise KeyferError(f"the crops of {crops.root} are not those of {kf_cache.root}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    facemesh, network = FaceMesh.from_pretrained(), DlibResNet.from_pretrained()
    index = torch.tensor(keypoint_indices(meta["keypoints"]))
    n, size = len(meta["paths"]), TAPS[CACHED_LEVEL].size
    maps_shape = (n, 2, TAPS[CACHED_LEVEL].channels, size, size)
    level3 = np.lib.format.open_memmap(out / "level3.npy", "w+", np.float16, maps_shape)
    points_shape = (n, len(VIEWS), len(index), 2)
    chip_points = np.lib.format.open_memmap(out / "chip_points.npy", "w+", np.float32, points_shape)
    # The Keypoint-Feature cache's draws: same seed, batches and order of calls.
    generator = torch.Generator().manual_seed(meta["seed"])
    batches = range(0, n, batch_size)
    for start in tqdm(batches, desc=f"caching {out.name}", unit="batch", disable=None):
        stop = min(start + batch_size, n)
        batch = torch.from_numpy(crops.read(np.arange(start, stop)))
        images = batch.permute(0, 3, 1, 2).float() / 255.0
        for view, crop in enumerate((images, images.flip(-1))):
            mesh = facemesh(crop).mesh[..., :2]
            points = mesh[:, index]
            iod = inter_ocular_distance(mesh[:, list(MESH_TO_IBUG68)])
            moved = perturb_keypoints(points, iod, meta["sigma"], generator)
            crop_to_chip = fit_crop_to_chip(ibug68(mesh))
            chips = extract_chips(crop, crop_to_chip)
            level3[start:stop, view] = network(chips, taps={CACHED_LEVEL}).taps[CACHED_LEVEL]
            chip_points[start:stop, view] = apply_affine(crop_to_chip, points)
            chip_points[start:stop, view + 2] = apply_affine(crop_to_chip, moved)
    level3.flush()
    chip_points.flush()
    record = {"level": CACHED_LEVEL, "extends": str(kf_cache.root), "n": n}
    (out / "meta.json").write_text(json.dumps(record))
    return Level3Cache.open(out)
