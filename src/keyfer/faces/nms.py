"""MediaPipe's weighted non-maximum suppression (``NonMaxSuppressionCalculator``, WEIGHTED)."""

from __future__ import annotations

import torch


def box_iou(boxes: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """IoU of (N, 4) boxes against one (4,) box, all as (x0, y0, x1, y1)."""
    x0 = torch.maximum(boxes[:, 0], box[0])
    y0 = torch.maximum(boxes[:, 1], box[1])
    x1 = torch.minimum(boxes[:, 2], box[2])
    y1 = torch.minimum(boxes[:, 3], box[3])
    inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return inter / union.clamp(min=1e-12)


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
        group = remaining & (box_iou(boxes, boxes[best]) > iou_threshold)
        group[best] = True
        weights = scores[group] / scores[group].sum()
        out_boxes.append((boxes[group] * weights[:, None]).sum(0))
        out_keypoints.append((keypoints[group] * weights[:, None, None]).sum(0))
        out_scores.append(scores[best])
        remaining &= ~group
    if not out_scores:
        return boxes[:0], keypoints[:0], scores[:0]
    return torch.stack(out_boxes), torch.stack(out_keypoints), torch.stack(out_scores)
