"""The ``keyfer predict`` job: images, folders, videos and cameras to expression records."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from keyfer.api import ExpressionRecognizer, Face
from keyfer.faces.pipeline import Faces
from keyfer.io.annotate import draw_faces, save_rgb
from keyfer.io.records import RecordWriter
from keyfer.io.video import VideoWriter

log = logging.getLogger(__name__)


def draw_importance(image: np.ndarray, points: np.ndarray, importance: np.ndarray) -> np.ndarray:
    """Overlay a heat map of keypoint importances: a soft blob per keypoint at (K, 2) image
    ``points`` (pixel centres at +0.5), coloured and sized by its (K,) importance in (0, 1)."""
    height, width = image.shape[:2]
    heat = np.zeros((height, width), np.float32)
    spread = max(2.0, float(np.ptp(points[:, 0])) / 25)
    weights = (importance - importance.min()) / max(float(np.ptp(importance)), 1e-6)
    for (x, y), weight in zip(points - 0.5, weights, strict=True):
        cv2.circle(heat, (int(round(x)), int(round(y))), int(spread), float(weight), -1)
    heat = cv2.GaussianBlur(heat, (0, 0), spread)
    heat /= max(float(heat.max()), 1e-6)
    colours = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    alpha = (0.6 * heat)[..., None]
    return (image * (1 - alpha) + colours * alpha).astype(np.uint8)


@dataclass
class PredictJob:
    """What to draw and save besides the records: ``explain`` adds the keypoint-importance heat
    overlay to annotations, ``crops_dir`` receives each face's aligned crop. Videos run the
    detector with tiling only when ``video_tiling`` (it costs more than a frame's budget)."""

    recognizer: ExpressionRecognizer
    writer: RecordWriter
    annotate_dir: Path | None = None
    explain: bool = False
    crops_dir: Path | None = None
    every_n: int = 1
    smooth: bool = False
    show: bool = False
    video_tiling: bool = False

    def draw(self, image: np.ndarray, faces: Faces, results: list[Face]) -> np.ndarray:
        """The annotated copy: boxes, labels with probabilities, landmarks, and the heat map."""
        if self.explain:
            index = self.recognizer.loaded.model.keypoint_index.cpu()
            for face, result in zip(faces.mesh, results, strict=True):
                if result.keypoint_importance is not None:
                    points = face[index, :2].numpy()
                    image = draw_importance(image, points, np.array(result.keypoint_importance))
        labels = [self._label(r) for r in results]
        return draw_faces(image, faces, labels)

    @staticmethod
    def _label(result: Face) -> str:
        track = "" if result.track_id is None else f"#{result.track_id} "
        return f"{track}{result.label} {result.probabilities[result.label]:.2f}"

    def _save_crops(self, stem: str, faces: Faces) -> None:
        for index, crop in enumerate(faces.crops):
            rgb = (crop.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            save_rgb(self.crops_dir / f"{stem}_face{index}.png", rgb)

    def describe_batch(self, images: list[np.ndarray], paths: list[Path], annotate: bool):
        """Records of each image's faces, and its annotated copy when asked for; aligned crops
        are saved as ``<image stem>_face<i>.png``."""
        described = []
        for image, path, (faces, results) in zip(
            images, paths, self.recognizer.analyze_batch(images), strict=True
        ):
            if self.crops_dir is not None:
                self._save_crops(path.stem, faces)
            drawing = self.draw(image, faces, results) if annotate else None
            described.append(([r.to_record() for r in results], drawing))
        return described

    def run_video(self, source: Path | int) -> int:
        """Write one record per processed frame of a video or camera; returns the faces found."""
        name = f"camera{source}" if isinstance(source, int) else source.stem
        path = f"camera:{source}" if isinstance(source, int) else str(source)
        writer = None
        if self.annotate_dir is not None:
            writer = VideoWriter(self.annotate_dir / f"{name}.mp4", 30.0 / self.every_n)
        found = 0
        detector = self.recognizer.pipeline.detector
        photo_tiling, detector.tiling = detector.tiling, self.video_tiling
        try:
            frames = self.recognizer.predict_video(source, self.every_n, self.smooth)
            for result in frames:
                record: dict[str, Any] = result.to_record(path)
                self.writer.write(record)
                found += len(result.faces)
                if self.crops_dir is not None:
                    self._save_crops(f"{name}_frame{result.frame}", result.pipeline_faces)
                if writer is not None or self.show:
                    drawing = self.draw(result.image, result.pipeline_faces, result.faces)
                    if writer is not None:
                        writer.write(drawing)
                    if self.show and not _show(drawing):
                        break
        finally:
            detector.tiling = photo_tiling
            if writer is not None:
                writer.close()
        if self.recognizer.last_corrupt_frames:
            log.warning("%s: %d corrupt frames skipped", path, self.recognizer.last_corrupt_frames)
        return found


def gui_available() -> bool:
    """Whether this OpenCV build can open windows (the headless build cannot)."""
    return re.search(r"GUI:\s+NONE", cv2.getBuildInformation()) is None


def _show(image: np.ndarray) -> bool:
    """Show a frame; False once the user presses q or Esc."""
    cv2.imshow("keyfer", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
