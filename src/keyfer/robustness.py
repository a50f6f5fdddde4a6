"""Robustness curves (docs/method.md, 'Evaluation'): accuracy under landmark noise and under
occlusion of the face.

Coordinates are crop pixels of the (192, 192) aligned crop, a pixel's centre at integer + 0.5.

- **Landmark noise**: every keypoint where Keypoint Features are sampled moves by
  N(0, (sigma * IOD)^2) per coordinate, IOD being each face's outer-eye-corner distance (iBUG 37
  and 46, docs/method.md, 'Conventions') of the model's own landmarks, and sigma in IOD units.
  FaceMesh runs once; the features are re-sampled from the same taps at each perturbed keypoint set
  (:meth:`NKFModel.classify`). One standard-normal draw per image is scaled by every sigma, so the
  curve compares sigmas, not draws. Sigma 0 is the clean landmarks, unclamped: the clean logits.
- **Occlusion**: a box of the crop is filled before FaceMesh sees it. ``random``: a square of
  side ``size`` x 192 centred at a uniform point of the bounding box of the clean iBUG-68
  landmarks, shifted to lie inside the crop. ``eyes`` / ``mouth``: the bounding box of those
  iBUG-68 points on the clean crop, widened by :data:`MASK_MARGIN` IOD on each side.

Draws are seeded by (seed, the image's position in the sample list), so a rerun, another batch
size or other settings give every image the same noise and patch position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from keyfer.errors import KeyferError
from keyfer.faces.facemesh import CROP_SIZE
from keyfer.faces.ibug68 import ibug68
from keyfer.metrics.classification import classification_report
from keyfer.metrics.plots import save_accuracy_png
from keyfer.nkf.perturbation import perturb_keypoints
from keyfer.preprocessing import PAD_VALUE

if TYPE_CHECKING:
    from keyfer.nkf.model import Features, NKFModel

OCCLUSION_KINDS = ("random", "eyes", "mouth")
FILLS = {"gray": PAD_VALUE / 255.0, "black": 0.0}
"""Occlusion fill name -> value of the [0, 1] crop (gray is the pre-crop padding gray)."""
MASK_MARGIN = 0.2
"""Eye and mouth masks reach this many IOD beyond their landmarks on each side."""
_REGIONS = {"eyes": slice(36, 48), "mouth": slice(48, 68)}  # 0-based iBUG-68 points
_NOISE_STREAM, _PATCH_STREAM = 0, 1


@dataclass(frozen=True)
class Occlusion:
    """A ``random`` square patch of side ``size`` (a fraction of the crop side, in (0, 1]), or
    the ``eyes`` or ``mouth`` mask (``size`` None)."""

    kind: str
    size: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in OCCLUSION_KINDS:
            raise KeyferError(f"occlusion kind must be one of {OCCLUSION_KINDS}, got {self.kind!r}")
        if (self.kind == "random") != (self.size is not None):
            raise KeyferError("a random occlusion needs a size, and eyes/mouth masks take none")
        if self.size is not None and not 0 < self.size <= 1:
            raise KeyferError(
                f"occlusion patch size is a fraction of the crop side in (0, 1], got {self.size}"
            )

    @property
    def label(self) -> str:
        return f"random {self.size:g}" if self.kind == "random" else self.kind


def _check_sigma(sigma: float) -> None:
    if not (math.isfinite(sigma) and sigma >= 0):
        raise KeyferError(f"landmark noise sigma must be a number >= 0 (IOD units), got {sigma}")


@dataclass(frozen=True)
class RobustnessSpec:
    """What to score besides the clean crops: ``landmark_noise`` sigmas (IOD units) and
    ``occlusion`` settings filled with ``fill`` (``gray`` or ``black``), seeded by ``seed``."""

    landmark_noise: tuple[float, ...] = ()
    occlusion: tuple[Occlusion, ...] = ()
    fill: str = "gray"
    seed: int = 0

    def __post_init__(self) -> None:
        for sigma in self.landmark_noise:
            _check_sigma(sigma)
        if self.fill not in FILLS:
            raise KeyferError(f"occlusion fill must be one of {tuple(FILLS)}, got {self.fill!r}")
        if self.seed < 0:
            raise KeyferError(f"the robustness seed must be >= 0, got {self.seed}")


def _items(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise KeyferError(f"{what} takes a comma-separated list without empty items, got {text!r}")
    return items


def parse_landmark_noise(text: str) -> tuple[float, ...]:
    """``"0,0.02,0.05,0.1"`` -> sigmas in IOD units; a :class:`KeyferError` for anything else."""
    sigmas = []
    for item in _items(text, "landmark noise"):
        try:
            sigma = float(item)
        except ValueError:
            raise KeyferError(f"landmark noise sigma must be a number, got {item!r}") from None
        _check_sigma(sigma)
        sigmas.append(sigma)
    return tuple(sigmas)


def parse_occlusions(text: str) -> tuple[Occlusion, ...]:
    """``"0.1,0.2,eyes,mouth"`` -> random patches of those sizes (fractions of the crop side) and
    the named masks; a :class:`KeyferError` for anything else."""
    occlusions = []
    for item in _items(text, "occlusion"):
        if item in _REGIONS:
            occlusions.append(Occlusion(item))
            continue
        try:
            size = float(item)
        except ValueError:
            raise KeyferError(
                f"occlusion must be a patch size in (0, 1] or one of eyes, mouth; got {item!r}"
            ) from None
        occlusions.append(Occlusion("random", size))
    return tuple(occlusions)


def _image_rng(seed: int, index: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, *stream])


def unit_noise(
    indices: Sequence[int], num_keypoints: int, seed: int, view: int = 0
) -> torch.Tensor:
    """(B, K, 2) float32 standard-normal draws, one seeded set per image: ``indices`` are the
    images' positions in the sample list, ``view`` 0 the crop and 1 its mirror (flip TTA)."""
    draws = [
        _image_rng(seed, index, _NOISE_STREAM, view).standard_normal((num_keypoints, 2))
        for index in indices
    ]
    return torch.from_numpy(np.stack(draws)).float()


def patch_positions(indices: Sequence[int], seed: int) -> torch.Tensor:
    """(B, 2) float32 uniform (x, y) in [0, 1): where in the face's landmark bounding box each
    image's random patch is centred, the same for every patch size."""
    draws = [_image_rng(seed, index, _PATCH_STREAM).random(2) for index in indices]
    return torch.from_numpy(np.stack(draws)).float()


def occlusion_boxes(
    occlusion: Occlusion, landmarks68: torch.Tensor, iod: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """(B, 4) int64 boxes ``x0, y0, x1, y1``: pixel columns x0..x1-1 and rows y0..y1-1 of the crop.

    ``landmarks68`` (B, 68, 2) crop pixels and ``iod`` (B,) pixels of the clean crop;
    ``positions`` (B, 2) from :func:`patch_positions` (used by ``random`` only).
    """
    if occlusion.kind == "random" and occlusion.size is not None:  # a random one has a size
        low, high = landmarks68.amin(1), landmarks68.amax(1)
        centre = low + positions.to(low) * (high - low)
        side = max(1, round(occlusion.size * CROP_SIZE))
        start = (centre - side / 2).round().clamp(0, CROP_SIZE - side)
        return torch.cat([start, start + side], dim=1).long()
    points = landmarks68[:, _REGIONS[occlusion.kind]]
    margin = (MASK_MARGIN * iod)[:, None]
    box = torch.cat([points.amin(1) - margin, points.amax(1) + margin], dim=1)
    return box.round().clamp(0, CROP_SIZE).long()


def occlude(crops: torch.Tensor, boxes: torch.Tensor, fill: float) -> torch.Tensor:
    """A copy of (B, 3, H, W) crops with each image's (x0, y0, x1, y1) box set to ``fill``."""
    occluded = crops.clone()
    for image, (x0, y0, x1, y1) in zip(occluded, boxes.tolist(), strict=True):
        image[:, y0:y1, x0:x1] = fill
    return occluded


def _noisy_logits(
    model: NKFModel, features: Features, sigma: float, noise: torch.Tensor
) -> torch.Tensor:
    """Logits with the keypoints moved by ``noise`` (B, K, 2) x sigma x IOD; sigma 0 is the clean
    keypoints themselves (not clamped), so its logits are the clean ones."""
    if sigma == 0:
        return model.classify(features).logits
    moved = perturb_keypoints(features.keypoints, features.iod, sigma, noise=noise)
    return model.classify(features, moved).logits


def _mean(logits: list[torch.Tensor]) -> torch.Tensor:
    return sum(logits[1:], logits[0]) / len(logits)


@torch.inference_mode()
def robustness_logits(
    model: NKFModel,
    crops: torch.Tensor,
    indices: Sequence[int],
    spec: RobustnessSpec,
    tta_flip: bool = False,
) -> list[torch.Tensor]:
    """(B, n_classes) logits of (B, 3, 192, 192) crops in [0, 1] (the model's colour mode): the
    clean ones, then one per sigma of ``spec.landmark_noise``, then one per ``spec.occlusion``.

    ``indices`` (the images' positions in the sample list) seed each image's draws. With
    ``tta_flip`` each is the mean with the mirrored crop's, whose landmarks get their own noise;
    occlusions are placed on the crop, then mirrored with it.
    """
    views = (crops, crops.flip(-1)) if tta_flip else (crops,)
    clean, noisy = [], []
    for view, images in enumerate(views):
        features = model.features(images)
        if view == 0:
            landmarks68, iod = ibug68(features.mesh)[..., :2], features.iod
        clean.append(model.classify(features).logits)
        noise = unit_noise(indices, features.keypoints.shape[1], spec.seed, view)
        noisy.append(
            [_noisy_logits(model, features, sigma, noise) for sigma in spec.landmark_noise]
        )
    positions = patch_positions(indices, spec.seed)
    occluded = []
    for occlusion in spec.occlusion:
        boxes = occlusion_boxes(occlusion, landmarks68, iod, positions)
        images = occlude(crops, boxes, FILLS[spec.fill])
        views = (images, images.flip(-1)) if tta_flip else (images,)
        occluded.append(_mean([model(view).logits for view in views]))
    return [
        _mean(clean),
        *(_mean(list(per_view)) for per_view in zip(*noisy, strict=True)),
        *occluded,
    ]


def robustness_report(
    logits: Sequence[torch.Tensor],
    labels: np.ndarray,
    classes: Sequence[str],
    spec: RobustnessSpec,
) -> dict[str, Any]:
    """The report entries of (N, n_classes) ``logits`` in :func:`robustness_logits` order
    (already restricted to the dataset's classes) against (N,) ``labels``: ``landmark_noise``
    [{sigma, accuracy, mean_class_accuracy}], ``occlusion`` [{kind, size, accuracy,
    mean_class_accuracy}], and the settings that reproduce them."""

    def scores(values: torch.Tensor) -> dict[str, float]:
        report = classification_report(labels, values.argmax(1).numpy(), classes)
        return {key: report[key] for key in ("accuracy", "mean_class_accuracy")}

    noise = logits[1 : 1 + len(spec.landmark_noise)]
    occluded = logits[1 + len(spec.landmark_noise) :]
    report: dict[str, Any] = {"robustness_seed": spec.seed}
    if spec.landmark_noise:
        report["landmark_noise"] = [
            {"sigma": sigma, **scores(values)}
            for sigma, values in zip(spec.landmark_noise, noise, strict=True)
        ]
    if spec.occlusion:
        report["occlusion_fill"] = spec.fill
        report["occlusion"] = [
            {"kind": occlusion.kind, "size": occlusion.size, **scores(values)}
            for occlusion, values in zip(spec.occlusion, occluded, strict=True)
        ]
    return report


def _occlusion_label(entry: dict[str, Any]) -> str:
    return Occlusion(entry["kind"], entry["size"]).label


def _rows(report: dict[str, Any]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    return {
        "landmark noise": [(f"sigma {e['sigma']:g}", e) for e in report.get("landmark_noise", [])],
        "occlusion": [(_occlusion_label(e), e) for e in report.get("occlusion", [])],
    }


def robustness_table(report: dict[str, Any]) -> str:
    """The robustness entries of an eval report as a small text table."""
    lines = []
    for heading, rows in _rows(report).items():
        if rows:
            lines.append(f"{heading:<16} {'accuracy':>8} {'mean class acc.':>15}")
            lines += [
                f"  {name:<14} {e['accuracy']:>8.4f} {e['mean_class_accuracy']:>15.4f}"
                for name, e in rows
            ]
    return "\n".join(lines)


def _plot(
    path: Path,
    title: str,
    x_label: str,
    positions: Sequence[float],
    ticks: Sequence[str],
    entries: Sequence[dict[str, Any]],
    join: bool,
) -> Path:
    series = {
        "accuracy": [e["accuracy"] for e in entries],
        "mean class accuracy": [e["mean_class_accuracy"] for e in entries],
    }
    save_accuracy_png(path, title, x_label, list(positions), list(ticks), series, join)
    return path


def save_robustness_pngs(report: dict[str, Any], folder: Path, stem: str, title: str) -> list[Path]:
    """Plot an eval report's accuracy against landmark-noise sigma (``<stem>_landmark_noise.png``)
    and per occlusion beside the clean crop (``<stem>_occlusion.png``); returns the paths."""
    paths = []
    if "landmark_noise" in report:
        sigmas = [e["sigma"] for e in report["landmark_noise"]]
        ticks = [f"{s:g}" for s in sigmas]
        path = folder / f"{stem}_landmark_noise.png"
        x_label = "landmark noise sigma (IOD units)"
        paths.append(_plot(path, title, x_label, sigmas, ticks, report["landmark_noise"], True))
    if "occlusion" in report:
        entries = [report, *report["occlusion"]]
        ticks = ["clean", *(_occlusion_label(e) for e in report["occlusion"])]
        path = folder / f"{stem}_occlusion.png"
        paths.append(_plot(path, title, "occlusion", range(len(entries)), ticks, entries, False))
    return paths
