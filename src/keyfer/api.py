"""``ExpressionRecognizer``: photos in, faces with landmarks and expressions out."""

from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from keyfer.crop_predictor import CropPredictor, model_network
from keyfer.device import resolve_device
from keyfer.errors import KeyferError
from keyfer.export import OnnxCropNetwork, cached_crop_network, cached_detector_network
from keyfer.faces.detector import FaceDetector
from keyfer.faces.pipeline import Boxes, DetectedFaces, Detector, FacePipeline
from keyfer.faces.pose import head_pose
from keyfer.io.images import ImageInput, as_rgb_array
from keyfer.io.records import COORD_DECIMALS, SCORE_DECIMALS, rounded
from keyfer.io.video import VideoSource
from keyfer.models.registry import DEFAULT_MODEL, create_model
from keyfer.nkf.model import NKFModel
from keyfer.preprocessing import gray3_crops
from keyfer.results import Expression, Face, FrameResult, VideoFrames
from keyfer.tracking import FaceTracker

# A face is marked "reliable": false (never dropped) below these: FaceMesh presence (a
# whole-image face's too, which then has 0.05% false faces on face-free crops where 0.1% would
# allow 0.55: docs/results/whole_image_threshold.md), the box's shorter side in pixels, and
# beyond this absolute yaw in degrees.
RELIABLE_MIN_PRESENCE = 0.8
RELIABLE_MIN_SIZE = 40.0
RELIABLE_MAX_YAW = 60.0


class ExpressionRecognizer:
    """Detect faces, align them, and recognise their expressions.

    ``model`` is a shipped model name (``keyfer models``), a checkpoint path, or a model that
    :func:`keyfer.create_model` made (moved to ``device`` and put in inference mode); ``device`` is
    auto, cpu, cuda or cuda:N; ``tiling`` searches tiles for small faces, in photos and videos
    alike (off for speed); ``tta_flip`` averages each face with its mirror image;
    ``batch_size`` caps the images per step of :meth:`predict_batch` and the faces per network
    call. ``backend="onnx"`` runs the crop network and the detector with onnxruntime: the crop
    network from ``onnx_path`` if given, else from an export made once into
    ``~/.cache/keyfer/onnx`` (``$XDG_CACHE_HOME/keyfer/onnx`` when that is set), like the
    detector's (needs the ``onnx`` extra); ``threads`` sets onnxruntime's CPU threads. torch's
    are left as they are: set them with ``torch.set_num_threads``. ``detector`` replaces
    keyfer's face detector with your own (a :class:`~keyfer.faces.pipeline.Detector`).
    ``fallback``: in an image where no face is found, the whole image is tried as one face (a
    tight face crop; see :class:`~keyfer.faces.pipeline.FacePipeline`); such a face has
    ``found_by`` ``whole-image`` and, like any face, is ``reliable`` only with a presence of at
    least ``RELIABLE_MIN_PRESENCE`` (0.8, where the fallback keeps faces from 0.1).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | NKFModel = DEFAULT_MODEL,
        device: str = "auto",
        detector_threshold: float = 0.5,
        tiling: bool = True,
        batch_size: int = 32,
        tta_flip: bool = False,
        threads: int | None = None,
        backend: str = "torch",
        onnx_path: str | os.PathLike[str] | None = None,
        detector: Detector | None = None,
        fallback: bool = True,
    ) -> None:
        if backend not in ("torch", "onnx"):
            raise KeyferError(f"unknown backend {backend!r}; use torch or onnx")
        self.device = resolve_device(device)
        if not isinstance(model, NKFModel):
            model = create_model(model)
        info = model.info  # a model that does not describe itself fails here, not on a face
        self.model = model.to(self.device).eval()
        self.onnx = detector_network = None
        if backend == "onnx":
            self.onnx = (
                OnnxCropNetwork(Path(onnx_path), threads)
                if onnx_path
                else cached_crop_network(model, info.name, info.digest, threads)
            )
            detector_network = None if detector else cached_detector_network(threads)
        # A frozen model holds MediaPipe's FaceMesh already; the landmarks can share it.
        shared = None if model.config.finetune_alignment else model.facemesh
        self.pipeline = FacePipeline(
            self.device, tiling, detector_threshold, facemesh=shared,
            detector_network=detector_network, detector=detector, fallback=fallback,
        )  # fmt: skip
        self.tta_flip = tta_flip
        self.batch_size = batch_size
        self._last_video: VideoFrames | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.model.info.classes)

    def analyze(
        self, image: np.ndarray, boxes: Boxes | None = None
    ) -> tuple[DetectedFaces, list[Face]]:
        """The pipeline's :class:`DetectedFaces` and one :class:`Face` each for an (H, W, 3)
        RGB image; ``boxes``: see :meth:`predict`."""
        return self.analyze_batch([image], None if boxes is None else [boxes])[0]

    @torch.inference_mode()
    def analyze_batch(
        self, images: Sequence[np.ndarray], boxes: Sequence[Boxes] | None = None
    ) -> list[tuple[DetectedFaces, list[Face]]]:
        """:meth:`analyze` for many images. The faces and their landmarks are the pipeline's
        (:meth:`FacePipeline.batch`, the same as ``keyfer landmarks``, whatever the model); the
        crop network then runs on their crops, up to ``batch_size`` at a time across images."""
        found = self.pipeline.batch(images, self.batch_size, boxes)
        probabilities, importance = self._classify(torch.cat([faces.crops for faces in found]))
        results, start = [], 0
        for faces in found:
            stop = start + len(faces)
            rows = None if importance is None else importance[start:stop]
            results.append((faces, self._describe(faces, probabilities[start:stop], rows)))
            start = stop
        return results

    def _describe(
        self, faces: DetectedFaces, probabilities: np.ndarray, importance: np.ndarray | None
    ) -> list[Face]:
        """One :class:`Face` per face of ``faces``, from their (N, C) probabilities and (N, K)
        keypoint importances (or None)."""
        if len(faces) == 0:
            return []
        poses = head_pose(faces.mesh)
        sizes = (faces.boxes[:, 2:] - faces.boxes[:, :2]).amin(dim=1)
        reliable = (
            (faces.presence >= RELIABLE_MIN_PRESENCE)
            & (sizes >= RELIABLE_MIN_SIZE)
            & (poses[:, 0].abs() <= RELIABLE_MAX_YAW)
        ).tolist()
        expressions = self._expressions(probabilities, importance)
        scores = [None] * len(faces) if faces.scores is None else faces.scores.tolist()
        keypoints = [None] * len(faces) if faces.keypoints6 is None else faces.keypoints6.numpy()
        rows = zip(
            faces.boxes.numpy(), scores, faces.presence.tolist(), keypoints,
            faces.landmarks68.numpy(), faces.mesh.numpy(), expressions, poses.tolist(), reliable,
            strict=True,
        )  # fmt: skip
        return [
            Face(
                box=box,
                score=score,
                presence=presence,
                keypoints6=points,
                landmarks68=landmarks,
                mesh=mesh,
                label=expression.label,
                probabilities=expression.probabilities,
                keypoint_importance=expression.keypoint_importance,
                pose=dict(zip(("yaw", "pitch", "roll"), pose, strict=True)),
                reliable=ok,
                found_by=faces.found_by,
            )
            for box, score, presence, points, landmarks, mesh, expression, pose, ok in rows
        ]

    def _expressions(
        self, probabilities: np.ndarray, importance: np.ndarray | None
    ) -> list[Expression]:
        """One :class:`Expression` per row of (B, C) probabilities and (B, K) importances."""
        classes = self.classes
        return [
            Expression(
                classes[int(p.argmax())],
                dict(zip(classes, p.tolist(), strict=True)),
                None if importance is None else importance[i],
            )
            for i, p in enumerate(probabilities)
        ]

    @torch.inference_mode()
    def classify_crops(self, crops: torch.Tensor) -> list[Expression]:
        """The :class:`Expression` of each of (B, 3, 192, 192) RGB crops in [0, 1], aligned as
        the pipeline aligns faces (:attr:`DetectedFaces.crops`: MediaPipe's crop, see
        :mod:`keyfer.faces.align`); other crops of a face give other answers. The network runs
        on up to ``batch_size`` crops at a time, with the recognizer's backend, TTA and
        temperature."""
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, 192, 192):
            raise KeyferError(f"crops must be (B, 3, 192, 192), got {tuple(crops.shape)}")
        return self._expressions(*self._classify(crops))

    def _classify(self, crops: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, C) float32 calibrated probabilities and (B, K) float32 keypoint importances (or
        None) of (B, 3, 192, 192) RGB crops in [0, 1]. The model's own landmarks (of the gray
        crop, for gray3 models) are not reported: the faces' landmarks are the pipeline's, of
        the colour crop."""
        info = self.model.info
        network = self.onnx.crop_outputs if self.onnx is not None else model_network(self.model)
        predictor = CropPredictor(
            network, info.temperature, len(info.classes), self.tta_flip, self.batch_size,
            prepare=self.model_input,
        )  # fmt: skip
        logits, importance = predictor(crops)
        probabilities = torch.softmax(logits, 1).numpy()
        return probabilities, None if importance is None else importance.numpy()

    def model_input(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, 192, 192) RGB crops in [0, 1] -> the model's input (gray3 models: luma x 3)."""
        crops = crops.to(self.device)
        if self.model.info.color_mode == "gray3":
            crops = gray3_crops(crops)
        return crops

    def predict(self, image: ImageInput, boxes: Boxes | None = None) -> list[Face]:
        """Faces of one image: a path, a PIL image, or an (H, W[, C]) numpy array (RGB).

        ``boxes`` (N, 4) x0, y0, x1, y1 in the image's pixels (after EXIF rotation for a path)
        are faces you found yourself, like face-alignment's ``detected_faces``: the detector is
        skipped and you get one face per box, in order, none dropped (FaceMesh's doubt shows in
        ``presence`` and ``reliable``). Each crop is MediaPipe's, centred on the box with 1.5 x
        its longer side, and upright, since a box tells no eye line; its ``score`` and
        ``keypoints6`` are None and its ``found_by`` is ``given``.
        """
        return self.analyze(as_rgb_array(image), boxes)[1]

    def predict_video(
        self,
        source: str | os.PathLike[str] | int,
        every_n: int = 1,
        smooth: bool = False,
        tiling: bool | None = None,
    ) -> VideoFrames:
        """Per-frame results of a video file or a camera index, every ``every_n``-th frame,
        read as you iterate.

        ``tiling`` overrides the detector's tiling for this video; by default (None) a video is
        searched like a photo, with the recognizer's ``tiling`` (on unless it was built with
        ``tiling=False``), and the whole-image ``fallback`` applies to each frame as to a photo.
        With ``smooth``, faces are tracked by IoU across frames; each gets a ``track_id`` and its
        probabilities are an EMA over the track (:mod:`keyfer.tracking`).
        Corrupt frames are skipped; each result counts those before it, and the returned
        iterator's ``summary`` (:class:`~keyfer.results.VideoSummary`) the whole video's.
        Raises :class:`KeyferError` when no frame can be decoded, or, after the last result,
        when frames are missing from the end of the stream (see
        :class:`keyfer.io.video.VideoSource`).
        """
        if tiling is not None and not isinstance(self.pipeline.detector, FaceDetector):
            raise KeyferError("tiling applies to keyfer's detector, not to one you plugged in")
        video = VideoSource(source if isinstance(source, int) else Path(source), every_n)
        self._last_video = VideoFrames(
            self._video_frames(video, smooth, tiling), lambda: video.corrupt_frames
        )
        return self._last_video

    def _video_frames(
        self, video: VideoSource, smooth: bool, tiling: bool | None
    ) -> Iterator[FrameResult]:
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
            video.close()

    @property
    def last_corrupt_frames(self) -> int:
        """Deprecated: the corrupt frames of the latest video; use the ``summary`` of
        :meth:`predict_video`'s result. Goes in keyfer 0.4."""
        warnings.warn(
            "last_corrupt_frames is deprecated: use predict_video(...).summary.corrupt_frames",
            DeprecationWarning,
            stacklevel=2,
        )
        return 0 if self._last_video is None else self._last_video.summary.corrupt_frames

    @contextlib.contextmanager
    def _detector_tiling(self, tiling: bool | None) -> Iterator[None]:
        """Run the block with the detector's tiling set to ``tiling`` (None: unchanged), and
        restore it after the block, so that no other call sees the change."""
        detector = self.pipeline.detector
        if tiling is None or not isinstance(detector, FaceDetector):
            yield
            return
        saved = detector.tiling
        detector.tiling = tiling
        try:
            yield
        finally:
            detector.tiling = saved

    def _smooth(self, tracker: FaceTracker, results: list[Face]) -> list[Face]:
        # The tracker follows the faces as their records show them (boxes to 0.01 px,
        # probabilities to 4 decimals), so a smoothed video follows from its records.
        boxes = np.array([rounded(r.box, COORD_DECIMALS) for r in results])
        raw = np.array(
            [[round(r.probabilities[c], SCORE_DECIMALS) for c in self.classes] for r in results]
        )
        ids, smoothed = tracker.update(boxes, raw)
        out = []
        for result, track_id, p in zip(results, ids, smoothed, strict=True):
            named = dict(zip(self.classes, p.tolist(), strict=True))
            label = self.classes[int(p.argmax())]
            out.append(replace(result, label=label, probabilities=named, track_id=track_id))
        return out

    def predict_batch(self, images: Iterable[ImageInput]) -> Iterator[list[Face]]:
        """:meth:`predict` for each image, in order, as an iterator: images are read
        ``batch_size`` at a time, as the results are consumed, and go through
        :meth:`analyze_batch` together (``list(...)`` for all at once)."""
        remaining = iter(images)
        while chunk := list(itertools.islice(remaining, self.batch_size)):
            for _, faces in self.analyze_batch([as_rgb_array(image) for image in chunk]):
                yield faces
