"""Tracking faces across video frames by box IoU, with EMA-smoothed expression probabilities."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from keyfer.geometry import box_iou

IOU_MATCH = 0.3
EMA_WEIGHT = 0.6  # weight of the new frame
MAX_MISSED_FRAMES = 10


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
        ious = box_iou(
            torch.as_tensor(np.asarray(boxes, np.float64).reshape(-1, 4)),
            torch.as_tensor(np.array([t.box for t in self.tracks], np.float64).reshape(-1, 4)),
        ).tolist()
        pairs = sorted(
            ((iou, i, j) for i, row in enumerate(ious) for j, iou in enumerate(row)), reverse=True
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
