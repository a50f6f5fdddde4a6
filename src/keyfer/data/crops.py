"""A :class:`~keyfer.data.labels.Sample` -> a model's (192, 192, 3) uint8 input crop, by the
sample's ``faces`` mode: the one face preparation of training and eval (both see the same crops).

- ``precropped``: the face as :func:`~keyfer.data.samples.load_sample_image` reads it (AffectNet:
  the square around its box), padded to a square when it is not one
  (:func:`~keyfer.data.samples.pad_to_square`), then given the model's pre-crop margin and
  padding (:func:`keyfer.preprocessing.prepare_face`);
- ``detect``: the face pipeline finds the faces of the whole image as ``keyfer predict`` does
  (the same detector settings, MediaPipe's rotated crop, FaceMesh's presence check), and the
  largest face's aligned crop is the input;
- ``auto``: as ``detect``, and when the detector finds no face, the whole image taken as one face
  crop if FaceMesh's presence on it reaches the pipeline's
  :data:`~keyfer.faces.pipeline.WHOLE_IMAGE_MIN_PRESENCE` (a tight face crop).

A sample that gives no crop raises :class:`SampleLeftOut` with its reason, one of
:data:`LEFT_OUT_REASONS`; :class:`LeftOut` records it for counting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from keyfer.data.labels import Sample
from keyfer.data.samples import load_sample_image, pad_to_square, read_sample
from keyfer.errors import KeyferError
from keyfer.faces.pipeline import FacePipeline
from keyfer.preprocessing import prepare_face, to_gray3

UNREADABLE = "unreadable"
NO_FACE = "no_face"
LEFT_OUT_REASONS: tuple[str, ...] = (UNREADABLE, NO_FACE)
"""Why a sample gives no crop: its image cannot be read or decoded, or its face box lies outside
it (``unreadable``); no face is found in it (``no_face``)."""


class SampleLeftOut(KeyferError):
    """A sample that gives no crop; ``reason`` is one of :data:`LEFT_OUT_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LeftOut:
    """A sample left out: its ``path``, ``reason`` (:data:`LEFT_OUT_REASONS`) and error message."""

    path: Path
    reason: str
    message: str

    @classmethod
    def of(cls, sample: Sample, error: SampleLeftOut) -> LeftOut:
        return cls(sample.path, error.reason, str(error))


def sample_crop(sample: Sample, color_mode: str, margin: float, padding: str) -> np.ndarray:
    """The (192, 192, 3) uint8 input crop of ``sample``'s face for a model with ``color_mode``
    (``gray3``: BT.601 luma in all channels, :func:`~keyfer.preprocessing.to_gray3`; ``rgb``),
    pre-crop ``margin`` and ``padding`` (used by ``precropped`` samples only), found by the
    sample's ``faces`` mode (see the module docstring).

    Raises :class:`SampleLeftOut` (``unreadable`` or ``no_face``) when there is none.
    """
    try:
        if sample.faces == "precropped":
            face = pad_to_square(load_sample_image(sample))
            return prepare_face(face, color_mode, margin, padding)
        image = read_sample(sample)
    except KeyferError as error:
        raise SampleLeftOut(UNREADABLE, str(error)) from error
    crop = largest_face_crop(image, fallback=sample.faces == "auto")
    if crop is None:
        raise SampleLeftOut(NO_FACE, f"no face found in {sample.path}")
    return to_gray3(crop) if color_mode == "gray3" else crop


def largest_face_crop(image: np.ndarray, fallback: bool) -> np.ndarray | None:
    """The (192, 192, 3) uint8 RGB aligned crop (:attr:`DetectedFaces.crops
    <keyfer.faces.pipeline.DetectedFaces>`, exactly: it was sampled as uint8) of the largest face
    (by box area) that :func:`face_pipeline` finds in an (H, W, 3) uint8 RGB image; with
    ``fallback``, the whole image as a face crop when the detector finds none. None: no face."""
    faces = face_pipeline(fallback)(image)
    if len(faces) == 0:
        return None
    sizes = (faces.boxes[:, 2:] - faces.boxes[:, :2]).prod(dim=1)
    crop = faces.crops[int(sizes.argmax())]
    return crop.mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


@cache
def face_pipeline(fallback: bool) -> FacePipeline:
    """This process's face pipeline on the CPU, built on first use, with the detector settings of
    :class:`keyfer.ExpressionRecognizer` (and so of ``keyfer predict``): tiling on, detector
    threshold 0.5. ``fallback``: the whole-image fallback; the pipelines with and without it share
    one detector and one FaceMesh."""
    if not fallback:
        return FacePipeline("cpu", tiling=True, detector_threshold=0.5, fallback=False)
    plain = face_pipeline(False)
    return FacePipeline("cpu", facemesh=plain.facemesh, detector=plain.detector, fallback=True)


def left_out_counts(left_out: Iterable[LeftOut]) -> dict[str, int]:
    """{reason: count} over :data:`LEFT_OUT_REASONS` (all of them, zeros included)."""
    counts = Counter(left.reason for left in left_out)
    return {reason: counts[reason] for reason in LEFT_OUT_REASONS}


def left_out_summary(left_out: Sequence[LeftOut], total: int) -> str:
    """``"3 of 100 images left out: 2 no face, 1 unreadable (first: <its error>)"``."""
    counts = left_out_text(left_out_counts(left_out))
    return f"{len(left_out)} of {total} images left out: {counts} (first: {left_out[0].message})"


def left_out_text(counts: dict[str, int]) -> str:
    """``{"no_face": 19, "unreadable": 2}`` -> ``"19 no face, 2 unreadable"``, the most common
    reason first; reasons counted 0 are not named."""
    ranked = sorted((item for item in counts.items() if item[1]), key=lambda item: -item[1])
    return ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in ranked)
