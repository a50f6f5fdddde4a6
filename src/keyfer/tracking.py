"""Tracking faces across video frames by box IoU, with EMA-smoothed expression probabilities."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IOU_MATCH = 0.3
EMA_WEIGHT = 0.6  # weight of the new frame
MAX_MISSED_FRAMES = 10


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    probabilities: np.ndarray
    missed: int = 0


@dataclass
class FaceTracker:
    """Greedy IoU matching of each frame's faces to the live tracks (best IoU first).

    :meth:`update` takes (N, 4) boxes and (N, C) probabilities and returns the track ids and the
    smoothed probabilities, ``EMA_WEIGHT`` x new + (1 - ``EMA_WEIGHT``) x previous.
    """

    tracks: list[_Track] = field(default_factory=list)
    next_id: int = 0

    def update(self, boxes: np.ndarray, probabilities: np.ndarray) -> tuple[list[int], np.ndarray]:
        pairs = sorted(
            (
                (_iou(box, track.box), i, j)
                for i, box in enumerate(boxes)
                for j, track in enumerate(self.tracks)
            ),
            reverse=True,
        )
        matched: dict[int, _Track] = {}
        used: set[int] = set()
        for iou, i, j in pairs:
            if iou < IOU_MATCH:
                break
            if i not in matched and j not in used:
                matched[i] = self.tracks[j]
                used.add(j)
        for j, track in enumerate(self.tracks):
            if j not in used:
                track.missed += 1
        smoothed = np.array(probabilities, dtype=np.float64)
        ids = []
        for i, box in enumerate(boxes):
            found = matched.get(i)
            if found is None:
                found = _Track(self.next_id, box, smoothed[i])
                self.next_id += 1
                self.tracks.append(found)
            else:
                smoothed[i] = EMA_WEIGHT * smoothed[i] + (1 - EMA_WEIGHT) * found.probabilities
                found.box, found.probabilities, found.missed = box, smoothed[i], 0
            ids.append(found.track_id)
        self.tracks = [t for t in self.tracks if t.missed <= MAX_MISSED_FRAMES]
        return ids, smoothed
