"""MediaPipe's weighted non-maximum suppression (``NonMaxSuppressionCalculator``, WEIGHTED), and
the suppression of loose boxes around a face that another detection found better."""

from __future__ import annotations

import torch

from keyfer.geometry import box_areas, box_iou, intersection_areas

HELD_FRACTION = 0.8
"""A box holds another when at least this fraction of the other's area lies inside it."""


def holds_better(
    boxes: torch.Tensor, scores: torch.Tensor, held_fraction: float = HELD_FRACTION
) -> torch.Tensor:
    """(N,) bool: the detections, (N, 4) boxes with (N,) scores, whose box holds (see
    :data:`HELD_FRACTION`) the box of a detection with a higher score: the same face, found
    better, inside a loose box that IoU alone cannot match to it."""
    held = intersection_areas(boxes, boxes) >= held_fraction * box_areas(boxes)[None, :]
    better = scores[None, :] > scores[:, None]  # [i, j]: detection j scores higher than i
    return (held & better).any(dim=1)


def weighted_nms(
    boxes: torch.Tensor, keypoints: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge overlapping detections by score-weighted averaging.

    Takes the best remaining detection, gathers every remaining one whose IoU with it exceeds
    ``iou_threshold`` (itself included), and outputs their score-weighted mean box and keypoints
    with the best score. Inputs (N, 4), (N, K, 2), (N,); outputs the same with M <= N rows,
    in descending score order.
    """
    order = torch.argsort(scores, descending=True)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = torch.ones(len(scores), dtype=torch.bool)
    out_boxes, out_keypoints, out_scores = [], [], []
    for best in range(len(scores)):
        if not remaining[best]:
            continue
        group = remaining & (box_iou(boxes, boxes[best, None])[:, 0] > iou_threshold)
        group[best] = True
        weights = scores[group] / scores[group].sum()
        out_boxes.append((boxes[group] * weights[:, None]).sum(0))
        out_keypoints.append((keypoints[group] * weights[:, None, None]).sum(0))
        out_scores.append(scores[best])
        remaining &= ~group
    if not out_scores:
        return boxes[:0], keypoints[:0], scores[:0]
    return torch.stack(out_boxes), torch.stack(out_keypoints), torch.stack(out_scores)
