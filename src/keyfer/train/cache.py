"""Keypoint-Feature caches for training heads on a frozen FaceMesh (docs/method.md, 'Training').

All taps of a split do not fit in memory, so the cache holds what the head needs, per image and
per view (``VIEWS``: the crop, its mirror, and one landmark-perturbed draw of each):
Keypoint Features of all five taps at the view's landmarks (K x 368, fp16), and the pooled
stride-32 global feature. Arrays are written as ``.npy`` files and read back memory-mapped::

    DIR/kf.npy        (N, 4, K, 368) float16    DIR/global.npy  (N, 2, 128) float16 (crop, mirror)
    DIR/labels.npy    (N,) int64                DIR/targets.npy (N, 8) float32
    DIR/presence.npy  (N,) float32              DIR/meta.json   settings and sample paths

Faces are found and prepared by :func:`keyfer.data.crops.sample_crop` (the crops eval sees). An
image without a crop (unreadable, or no face found) is cached as a mid-gray crop with label -1
(left out when the cache is loaded for training); ``meta.json`` counts those by reason under
``left_out`` and holds each one's error under ``errors``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from keyfer.data.crops import (
    LeftOut,
    SampleLeftOut,
    left_out_counts,
    left_out_summary,
    sample_crop,
)
from keyfer.data.labels import Sample
from keyfer.faces.facemesh import CROP_SIZE, TAP_STRIDES, FaceMesh
from keyfer.faces.ibug68 import MESH_TO_IBUG68, inter_ocular_distance
from keyfer.nkf.keypoint_features import keypoint_feature_channels, sample_keypoint_features
from keyfer.nkf.model import GLOBAL_TAP, keypoint_indices
from keyfer.nkf.perturbation import perturb_keypoints
from keyfer.preprocessing import DEFAULT_MARGIN, DEFAULT_PADDING, PAD_VALUE

log = logging.getLogger(__name__)

VIEWS = ("clean", "mirror", "clean_perturbed", "mirror_perturbed")
UNREADABLE = -1
"""The label cached for an image left out: unreadable, or no face found in it."""


@dataclass
class KFCache:
    """A cache opened for reading; arrays are memory-mapped (see the module docstring)."""

    root: Path
    kf: np.ndarray
    global_feature: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    presence: np.ndarray
    meta: dict

    @classmethod
    def open(cls, root: str | Path) -> KFCache:
        root = Path(root)
        arrays = {
            name: np.load(root / f"{name}.npy", mmap_mode="r")
            for name in ("kf", "global", "labels", "targets", "presence")
        }
        meta = json.loads((root / "meta.json").read_text())
        return cls(
            root,
            arrays["kf"],
            arrays["global"],
            arrays["labels"],
            arrays["targets"],
            arrays["presence"],
            meta,
        )

    def tap_channels(self, taps: Sequence[int]) -> np.ndarray:
        """Channel indices of the KF axis for a subset of taps (the cache holds all five)."""
        starts = np.cumsum([0] + [keypoint_feature_channels([s]) for s in TAP_STRIDES])
        return np.concatenate(
            [np.arange(starts[i], starts[i + 1]) for i, s in enumerate(TAP_STRIDES) if s in taps]
        )


def load_crops(
    samples: Sequence[Sample], color_mode: str, margin: float, padding: str
) -> tuple[torch.Tensor, dict[int, LeftOut]]:
    """(B, 3, 192, 192) FaceMesh crops in [0, 1] (:func:`sample_crop`), and each sample left out
    by its position in ``samples`` (its crop is mid-gray)."""
    crops, left_out = [], {}
    for position, sample in enumerate(samples):
        try:
            crops.append(sample_crop(sample, color_mode, margin, padding))
        except SampleLeftOut as error:
            left_out[position] = LeftOut.of(sample, error)
            crops.append(np.full((CROP_SIZE, CROP_SIZE, 3), PAD_VALUE, np.uint8))
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0, left_out


@torch.inference_mode()
def build_cache(
    samples: Sequence[Sample],
    out_dir: str | Path,
    keypoints: str | list[int] = "ibug68",
    sigma: float = 0.05,
    margin: float = DEFAULT_MARGIN,
    padding: str = DEFAULT_PADDING,
    batch_size: int = 64,
    seed: int = 0,
    color_mode: str = "gray3",
) -> KFCache:
    """Run the frozen FaceMesh over the samples' faces (found and prepared in ``color_mode`` by
    :func:`sample_crop`) and write a :class:`KFCache`.

    Perturbed views move every landmark by N(0, (sigma * IOD)^2), with a fixed ``seed``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    facemesh = FaceMesh.from_pretrained()
    index = torch.tensor(keypoint_indices(keypoints))
    n, k, c = len(samples), len(index), keypoint_feature_channels(TAP_STRIDES)
    kf = np.lib.format.open_memmap(out / "kf.npy", "w+", np.float16, (n, len(VIEWS), k, c))
    global_feature = np.lib.format.open_memmap(out / "global.npy", "w+", np.float16, (n, 2, 128))
    presence = np.zeros(n, np.float32)
    generator = torch.Generator().manual_seed(seed)
    left_out: dict[int, LeftOut] = {}
    for start in tqdm(
        range(0, n, batch_size), desc=f"caching {out.name}", unit="batch", disable=None
    ):
        batch = samples[start : start + batch_size]
        crops, missing = load_crops(batch, color_mode, margin, padding)
        left_out.update({start + position: left for position, left in missing.items()})
        stop = start + len(batch)
        for view, images in enumerate((crops, crops.flip(-1))):
            result = facemesh(images, taps=TAP_STRIDES)
            points = result.mesh[:, index, :2]
            iod = inter_ocular_distance(result.mesh[:, list(MESH_TO_IBUG68), :2])
            moved = perturb_keypoints(points, iod, sigma, generator)
            for slot, where in ((view, points), (view + 2, moved)):
                kf[start:stop, slot] = sample_keypoint_features(result.taps, where, TAP_STRIDES)
            global_feature[start:stop, view] = result.taps[GLOBAL_TAP].mean(dim=(2, 3))
            if view == 0:
                presence[start:stop] = result.presence
    kf.flush()
    global_feature.flush()
    labels = np.array([s.label for s in samples], np.int64)
    labels[list(left_out)] = UNREADABLE
    if left_out:
        log.warning("%s: %s", out, left_out_summary(list(left_out.values()), n))
    np.save(out / "labels.npy", labels)
    np.save(out / "targets.npy", np.stack([s.target for s in samples]).astype(np.float32))
    np.save(out / "presence.npy", presence)
    meta = {
        "keypoints": keypoints, "taps": list(TAP_STRIDES), "views": list(VIEWS), "sigma": sigma,
        "margin": margin, "padding": padding, "seed": seed, "color_mode": color_mode,
        "paths": [str(s.path) for s in samples],
        "left_out": left_out_counts(left_out.values()),
        "errors": {index: left.message for index, left in left_out.items()},
    }  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta))
    return KFCache.open(out)
