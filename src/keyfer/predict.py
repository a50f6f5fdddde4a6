"""The ``keyfer predict`` job: images, folders, videos and cameras to expression records."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from keyfer.api import ExpressionRecognizer
from keyfer.drawing import draw
from keyfer.faces.pipeline import DetectedFaces
from keyfer.io.annotate import heat_colours, save_rgb
from keyfer.io.outputs import OutputNames
from keyfer.io.records import SCORE_DECIMALS, RecordWriter
from keyfer.io.video import VideoWriter
from keyfer.results import Face

log = logging.getLogger(__name__)


# The --explain heat map: each keypoint's blob spans this fraction of the face, and the most
# important one is this opaque, so that a face of 50 px stays recognisable under it.
_HEAT_BLOB_FRACTION = 1 / 30
_HEAT_MAX_ALPHA = 0.4


def draw_importance(image: np.ndarray, points: np.ndarray, importance: np.ndarray) -> np.ndarray:
    """A copy of an (H, W, 3) RGB image under a translucent heat map of keypoint importances: a
    soft blob per keypoint at (K, 2) image ``points`` (pixel centres at +0.5), sized relative to
    the face (the points' extent) and coloured by its (K,) importance rescaled to [0, 1] with
    :func:`heat_colours`. Only the points' neighbourhood is touched."""
    canvas = image.copy()
    spread = max(1.0, float(np.ptp(points, axis=0).max()) * _HEAT_BLOB_FRACTION)
    height, width = image.shape[:2]
    x0, y0 = np.maximum(np.floor(points.min(axis=0) - 4 * spread), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(points.max(axis=0) + 4 * spread), (width, height)).astype(int)
    if x1 <= x0 or y1 <= y0:
        return canvas
    heat = np.zeros((y1 - y0, x1 - x0), np.float32)
    weights = (importance - importance.min()) / max(float(np.ptp(importance)), 1e-6)
    for (x, y), weight in zip(points - 0.5 - (x0, y0), weights, strict=True):
        cv2.circle(heat, (int(round(x)), int(round(y))), int(round(spread)), float(weight), -1)
    heat = cv2.GaussianBlur(heat, (0, 0), spread)
    heat = heat / max(float(heat.max()), 1e-6)
    alpha = (_HEAT_MAX_ALPHA * heat)[..., None]
    region = canvas[y0:y1, x0:x1]
    region[:] = np.round(region * (1 - alpha) + heat_colours(heat) * alpha).astype(np.uint8)
    return canvas


@dataclass
class PredictJob:
    """What to draw and save besides the records: ``explain`` adds the keypoint-importance heat
    overlay to annotations, ``crops_dir`` receives each face's aligned crop, and ``names``
    names these files."""

    recognizer: ExpressionRecognizer
    writer: RecordWriter
    annotate_dir: Path | None = None
    explain: bool = False
    crops_dir: Path | None = None
    every_n: int = 1
    smooth: bool = False
    show: bool = False
    names: OutputNames = field(default_factory=OutputNames)

    def draw(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """The annotated copy: boxes (unreliable faces marked), labels with probabilities,
        landmarks, and the heat map under them with its legend."""
        explained = False
        if self.explain:
            index = self.recognizer.model.keypoint_index.cpu().numpy()
            for face in faces:
                if face.keypoint_importance is not None:
                    # The heat map shows the importances as the face's record states them.
                    recorded = [round(float(w), SCORE_DECIMALS) for w in face.keypoint_importance]
                    image = draw_importance(image, face.mesh[index, :2], np.array(recorded))
                    explained = True
        return draw(image, faces, heat_legend=explained)

    def _save_crops(self, source: Path, faces: DetectedFaces, frame: str = "") -> None:
        """Save each face's crop as ``<source name><frame>_face<i>.png`` (see OutputNames) when
        asked for (``crops_dir``)."""
        if self.crops_dir is None:
            return
        for index, crop in enumerate(faces.crops):
            rgb = (crop.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            save_rgb(self.names.path(self.crops_dir, source, f"{frame}_face{index}.png"), rgb)

    def describe_batch(self, images: list[np.ndarray], paths: list[Path], annotate: bool):
        """Records of each image's faces, and its annotated copy when asked for; aligned crops
        are saved as ``<image name>_face<i>.png``."""
        described = []
        for image, path, (faces, results) in zip(
            images, paths, self.recognizer.analyze_batch(images), strict=True
        ):
            self._save_crops(path, faces)
            drawing = self.draw(image, results) if annotate else None
            described.append(([r.to_record() for r in results], drawing))
        return described

    def run_video(self, source: Path | int) -> int:
        """Write one record per processed frame of a video or camera; returns the faces found.
        The annotated video plays at the source's frame rate divided by ``every_n``."""
        name = Path(f"camera{source}") if isinstance(source, int) else source
        path = f"camera:{source}" if isinstance(source, int) else str(source)
        target: Path | None = None
        writer: VideoWriter | None = None
        if self.annotate_dir is not None:
            target = self.names.path(self.annotate_dir, name, ".mp4")
        found = 0
        frames = self.recognizer.predict_video(source, self.every_n, self.smooth)
        try:
            for result in frames:
                if target is not None and writer is None:
                    writer = VideoWriter(target, result.fps / self.every_n)
                record: dict[str, Any] = result.to_record(path)
                self.writer.write(record)
                found += len(result.faces)
                self._save_crops(name, result.pipeline_faces, f"_frame{result.frame}")
                if writer is not None or self.show:
                    drawing = self.draw(result.image, result.faces)
                    if writer is not None:
                        writer.write(drawing)
                    if self.show and not _show(drawing):
                        break
        finally:
            frames.close()
            if writer is not None:
                writer.close()
        corrupt = frames.summary.corrupt_frames
        if corrupt:
            log.warning("%s: %d corrupt frames skipped", path, corrupt)
        return found


def gui_available() -> bool:
    """Whether this OpenCV build can open windows (the headless build cannot)."""
    return re.search(r"GUI:\s+NONE", cv2.getBuildInformation()) is None


def _show(image: np.ndarray) -> bool:
    """Show a frame; False once the user presses q or Esc."""
    cv2.imshow("keyfer", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
