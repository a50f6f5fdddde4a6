"""``ExpressionRecognizer``: photos in, faces with landmarks and expressions out."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from keyfer.data.precrop import gray3_crops
from keyfer.device import resolve_device
from keyfer.errors import KeyferError
from keyfer.evaluate import load_model
from keyfer.export import OnnxCropNetwork, cached_crop_network, cached_detector_network
from keyfer.faces.pipeline import FacePipeline, Faces
from keyfer.faces.pose import head_pose
from keyfer.io.images import read_image, to_rgb_array
from keyfer.io.records import face_records
from keyfer.io.video import VideoSource
from keyfer.models.registry import DEFAULT_MODEL
from keyfer.tracking import FaceTracker

# A face is marked "reliable": false (never dropped) below these: FaceMesh presence, the box's
# shorter side in pixels, and beyond this absolute yaw in degrees.
RELIABLE_MIN_PRESENCE = 0.8
RELIABLE_MIN_SIZE = 40.0
RELIABLE_MAX_YAW = 60.0
ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray


@dataclass(frozen=True)
class Face:
    """One face: ``record`` holds the JSON face record (box, score, presence, keypoints6,
    landmarks68, mesh in image pixels, pixel centres at +0.5), ``label`` and ``probabilities``
    (canonical class -> calibrated probability), ``keypoint_importance`` (K floats, RKFA),
    ``pose`` (yaw, pitch, roll in degrees; see :mod:`keyfer.faces.pose`) and ``reliable``."""

    record: dict[str, Any]
    label: str
    probabilities: dict[str, float]
    keypoint_importance: list[float] | None
    pose: dict[str, float]
    reliable: bool
    track_id: int | None = None

    def to_record(self) -> dict[str, Any]:
        """The JSON face record of ``keyfer predict``."""
        return {
            **self.record,
            "expression": {"label": self.label, "probabilities": self.probabilities},
            "keypoint_importance": self.keypoint_importance,
            "pose": self.pose,
            "reliable": self.reliable,
            **({} if self.track_id is None else {"track_id": self.track_id}),
        }


@dataclass(frozen=True)
class FrameResult:
    """One processed video frame: its ``frame`` index, ``time_s``, size, the ``faces`` found,
    the pipeline's :class:`Faces` and the RGB ``image`` (for drawing), the source's ``fps``,
    and how many of the video's frames before this one were corrupt or missing
    (``corrupt_frames_before``; see :class:`keyfer.io.video.VideoSource`)."""

    frame: int
    time_s: float
    width: int
    height: int
    faces: list[Face]
    pipeline_faces: Faces
    image: np.ndarray
    fps: float
    corrupt_frames_before: int

    def to_record(self, path: str) -> dict[str, Any]:
        """The JSON record of this frame."""
        return {
            "path": path, "frame": self.frame, "time_s": round(self.time_s, 3),
            "corrupt_frames_before": self.corrupt_frames_before,
            "width": self.width, "height": self.height,
            "faces": [f.to_record() for f in self.faces], "error": None,
        }  # fmt: skip


class ExpressionRecognizer:
    """Detect faces, align them, and recognise their expressions.

    ``model`` is a shipped model name (``keyfer models``) or a checkpoint path; ``device`` is
    auto, cpu, cuda or cuda:N; ``tiling`` searches tiles for small faces, in photos and videos
    alike (off for speed); ``tta_flip`` averages each face with its mirror image; ``threads``
    sets CPU threads; ``batch_size`` caps the faces per network call in :meth:`predict_batch`.
    ``backend="onnx"`` runs the crop network and the detector with onnxruntime: the crop network
    from ``onnx_path`` if given, else from an export made once into ``~/.cache/keyfer/onnx``
    (``$XDG_CACHE_HOME/keyfer/onnx`` when that is set), like the detector's (needs the ``onnx``
    extra).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        detector_threshold: float = 0.5,
        tiling: bool = True,
        batch_size: int = 32,
        tta_flip: bool = False,
        threads: int | None = None,
        backend: str = "torch",
        onnx_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if backend not in ("torch", "onnx"):
            raise KeyferError(f"unknown backend {backend!r}; use torch or onnx")
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.loaded = load_model(model, self.device)
        self.onnx = detector_network = None
        if backend == "onnx":
            loaded = self.loaded
            self.onnx = (
                OnnxCropNetwork(Path(onnx_path), threads)
                if onnx_path
                else cached_crop_network(loaded.model, loaded.name, loaded.digest, threads)
            )
            detector_network = cached_detector_network(threads)
        # A frozen model holds MediaPipe's FaceMesh already; the landmarks can share it.
        model = self.loaded.model
        shared = None if model.config.finetune_alignment else model.facemesh
        self.pipeline = FacePipeline(
            self.device, tiling, detector_threshold, facemesh=shared,
            detector_network=detector_network,
        )  # fmt: skip
        self.tta_flip = tta_flip
        self.batch_size = batch_size
        self.last_corrupt_frames = 0

    @property
    def classes(self) -> list[str]:
        return self.loaded.classes

    def analyze(self, image: np.ndarray) -> tuple[Faces, list[Face]]:
        """The pipeline's :class:`Faces` and one :class:`Face` each for an (H, W, 3) RGB image."""
        return self.analyze_batch([image])[0]

    @torch.inference_mode()
    def analyze_batch(self, images: Sequence[np.ndarray]) -> list[tuple[Faces, list[Face]]]:
        """:meth:`analyze` for many images. The faces and their landmarks are the pipeline's
        (:meth:`FacePipeline.batch`, the same as ``keyfer landmarks``, whatever the model); the
        crop network then runs on their crops, up to ``batch_size`` at a time across images."""
        found = self.pipeline.batch(images, self.batch_size)
        crops = torch.cat([faces.crops for faces in found])
        outputs = [self._crop_outputs(chunk) for chunk in crops.split(self.batch_size)]
        probabilities = torch.cat([p for p, _ in outputs]) if outputs else torch.zeros(0)
        importance = [row for _, rows in outputs for row in rows]
        results, start = [], 0
        for faces in found:
            stop = start + len(faces)
            chosen = probabilities[start:stop].numpy()
            results.append((faces, self._describe(faces, chosen, importance[start:stop])))
            start = stop
        return results

    def _describe(self, faces: Faces, probabilities: np.ndarray, importance: list) -> list[Face]:
        if len(faces) == 0:
            return []
        poses = head_pose(faces.mesh)
        sizes = (faces.boxes[:, 2:] - faces.boxes[:, :2]).amin(dim=1)
        reliable = (
            (faces.presence >= RELIABLE_MIN_PRESENCE)
            & (sizes >= RELIABLE_MIN_SIZE)
            & (poses[:, 0].abs() <= RELIABLE_MAX_YAW)
        )
        results = []
        rows = zip(face_records(faces), probabilities, importance, poses, reliable, strict=True)
        for record, p, weights, pose, ok in rows:
            named = {c: round(float(v), 4) for c, v in zip(self.classes, p, strict=True)}
            label = self.classes[int(p.argmax())]
            angles = {
                k: round(float(v), 2) for k, v in zip(("yaw", "pitch", "roll"), pose, strict=True)
            }
            results.append(Face(record, label, named, weights, angles, bool(ok)))
        return results

    def model_input(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, 192, 192) RGB crops in [0, 1] -> the model's input (gray3 models: luma x 3)."""
        crops = crops.to(self.device)
        if self.loaded.color_mode == "gray3":
            crops = gray3_crops(crops)
        return crops

    def _crop_outputs(self, crops: torch.Tensor) -> tuple[torch.Tensor, list[list[float] | None]]:
        """For (B, 3, 192, 192) RGB crops in [0, 1]: calibrated probabilities (B, C) and B
        keypoint-importance lists (or None). The model's own landmarks (of the gray crop, for
        gray3 models) are not reported: the faces' landmarks are the pipeline's, of the colour
        crop."""
        model_crops = self.model_input(crops)
        logits, importance = self._run(model_crops)[2:]
        if self.tta_flip:
            logits = (logits + self._run(model_crops.flip(-1))[2]) / 2
        probabilities = torch.softmax(logits.float() / self.loaded.temperature, 1).cpu()
        if importance is None:
            return probabilities, [None] * len(crops)
        rows = [[round(float(w), 4) for w in row] for row in importance.float().cpu()]
        return probabilities, rows

    def _run(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Mesh (B, 468, 3), presence (B,), logits (B, C) and keypoint importance (B, K) or
        None for model-ready crops."""
        if self.onnx is not None:
            return tuple(map(torch.from_numpy, self.onnx(crops.float().cpu().numpy())))
        out = self.loaded.model(crops)
        return out.mesh, out.presence, out.logits, out.importance

    def predict(self, image: ImageInput) -> list[Face]:
        """Faces of one image: a path, a PIL image, or an (H, W[, C]) numpy array (RGB)."""
        return self.analyze(self._as_array(image))[1]

    @staticmethod
    def _as_array(image: ImageInput) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            return read_image(image)
        return to_rgb_array(image)

    def predict_video(
        self,
        source: str | os.PathLike[str] | int,
        every_n: int = 1,
        smooth: bool = False,
        tiling: bool | None = None,
    ) -> Iterator[FrameResult]:
        """Per-frame results of a video file or a camera index, every ``every_n``-th frame.

        ``tiling`` overrides the detector's tiling for this video; by default (None) a video is
        searched like a photo, with the recognizer's ``tiling`` (on unless it was built with
        ``tiling=False``). With ``smooth``, faces are tracked by IoU across frames; each gets a
        ``track_id`` and its probabilities are an EMA over the track (:mod:`keyfer.tracking`).
        Corrupt frames are skipped; each result counts those before it, and
        :attr:`last_corrupt_frames` the latest video's. Raises :class:`KeyferError` when no
        frame can be decoded, or, after the last result, when frames are missing from the end
        of the stream (see :class:`keyfer.io.video.VideoSource`).
        """
        video = VideoSource(source if isinstance(source, int) else Path(source), every_n)
        tracker = FaceTracker() if smooth else None
        try:
            for frame in video:
                with self._detector_tiling(tiling):
                    faces, results = self.analyze(frame.image)
                if tracker is not None and results:
                    results = self._smooth(tracker, results)
                height, width = frame.image.shape[:2]
                yield FrameResult(
                    frame.index, frame.time_s, width, height, results, faces, frame.image,
                    video.fps, frame.corrupt_before,
                )  # fmt: skip
        finally:
            self.last_corrupt_frames = video.corrupt_frames
            video.close()

    @contextlib.contextmanager
    def _detector_tiling(self, tiling: bool | None) -> Iterator[None]:
        """Run the block with the detector's tiling set to ``tiling`` (None: unchanged), and
        restore it after the block, so that no other call sees the change."""
        detector = self.pipeline.detector
        saved = detector.tiling
        detector.tiling = saved if tiling is None else tiling
        try:
            yield
        finally:
            detector.tiling = saved

    def _smooth(self, tracker: FaceTracker, results: list[Face]) -> list[Face]:
        boxes = np.array([r.record["box"] for r in results])
        raw = np.array([[r.probabilities[c] for c in self.classes] for r in results])
        ids, smoothed = tracker.update(boxes, raw)
        out = []
        for result, track_id, p in zip(results, ids, smoothed, strict=True):
            named = {c: round(float(v), 4) for c, v in zip(self.classes, p, strict=True)}
            label = self.classes[int(p.argmax())]
            out.append(replace(result, label=label, probabilities=named, track_id=track_id))
        return out

    def predict_batch(
        self, images: Sequence[ImageInput] | Iterable[ImageInput]
    ) -> list[list[Face]]:
        """:meth:`predict` for each image, in order, ``batch_size`` images at a time through
        :meth:`analyze_batch`."""
        arrays = [self._as_array(image) for image in images]
        return [
            faces
            for start in range(0, len(arrays), self.batch_size)
            for _, faces in self.analyze_batch(arrays[start : start + self.batch_size])
        ]
