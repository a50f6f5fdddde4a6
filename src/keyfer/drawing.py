"""``keyfer.draw``: faces drawn on the image they were found in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keyfer.faces.pipeline import DetectedFaces
from keyfer.io.annotate import draw_faces
from keyfer.io.images import ImageInput, as_rgb_array
from keyfer.results import Face


def face_label(face: Face) -> str:
    """The text drawn above a face: ``#<track id> <label> <probability>``."""
    track = "" if face.track_id is None else f"#{face.track_id} "
    return f"{track}{face.label} {face.probabilities[face.label]:.2f}"


def draw(
    image: ImageInput, faces: Sequence[Face] | DetectedFaces, *, heat_legend: bool = False
) -> np.ndarray:
    """An (H, W, 3) uint8 RGB copy of ``image`` (what ``predict`` took: a path, a PIL image
    or an array) with each face's box, 68 landmarks and detector keypoints, as
    ``keyfer predict --annotate`` draws them: for a recognizer's
    :class:`~keyfer.results.Face` list, with its label and probability, and a dashed amber box
    when it is not reliable; for the pipeline's :class:`DetectedFaces`, the geometry alone.
    ``heat_legend`` adds the colour bar of the ``--explain`` heat map."""
    image = as_rgb_array(image)
    if isinstance(faces, DetectedFaces):
        keypoints = None if faces.keypoints6 is None else faces.keypoints6.numpy()
        return draw_faces(
            image, faces.boxes.numpy(), faces.landmarks68.numpy(), keypoints,
            heat_legend=heat_legend,
        )  # fmt: skip
    faces = list(faces)
    boxes = np.stack([face.box for face in faces]) if faces else np.zeros((0, 4), np.float32)
    landmarks = np.stack([face.landmarks68 for face in faces]) if faces else np.zeros((0, 68, 2))
    points = [face.keypoints6 for face in faces if face.keypoints6 is not None]
    keypoints = np.stack(points) if faces and len(points) == len(faces) else None
    return draw_faces(
        image, boxes, landmarks, keypoints,
        labels=[face_label(face) for face in faces],
        reliable=[face.reliable for face in faces],
        heat_legend=heat_legend,
    )  # fmt: skip
