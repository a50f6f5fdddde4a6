"""Affine maps and box overlap, written once for the face pipeline, the appearance branch and
tracking.

Convention: continuous pixel coordinates, a pixel's centre at integer + 0.5, x to the right and
y down. An affine map is a (B, 2, 3) matrix ``M`` taking a point ``p`` to ``M @ [p, 1]``; a box is
(x0, y0, x1, y1). Every function is a differentiable tensor function that keeps the inputs'
device and dtype, and raises ValueError, naming the expected shape, on inputs of another shape.
"""

from __future__ import annotations

import torch


def _check_shape(name: str, tensor: torch.Tensor, trailing: tuple[int, ...], expected: str) -> None:
    """Raise ValueError unless ``tensor`` has ``len(trailing) + 1`` dimensions ending in
    ``trailing`` (a -1 there matches any size)."""
    shape = tuple(tensor.shape)
    ok = len(shape) == len(trailing) + 1 and all(
        want in (-1, got) for want, got in zip(trailing, shape[1:], strict=True)
    )
    if not ok:
        raise ValueError(f"{name} must have shape {expected}, got {shape}")


def apply_affine(transforms: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) affine maps applied to (B, K, 2) points, or to (1, K, 2) points shared by the
    batch -> (B, K, 2)."""
    _check_shape("transforms", transforms, (2, 3), "(B, 2, 3)")
    _check_shape("points", points, (-1, 2), "(B, K, 2)")
    return points @ transforms[:, :, :2].transpose(1, 2) + transforms[:, None, :, 2]


def invert_affine(transforms: torch.Tensor) -> torch.Tensor:
    """The (B, 2, 3) inverses of (B, 2, 3) invertible affine maps, in closed form (so that it
    exports to ONNX)."""
    _check_shape("transforms", transforms, (2, 3), "(B, 2, 3)")
    a, b, c, d = (transforms[:, i, j] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    determinant = a * d - b * c
    linear = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    linear = linear / determinant[:, None, None]
    return torch.cat([linear, -(linear @ transforms[:, :, 2:])], -1)


def compose_affine(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) maps ``outer`` after ``inner``, both (B, 2, 3): ``apply_affine(result, p) ==
    apply_affine(outer, apply_affine(inner, p))``."""
    _check_shape("outer", outer, (2, 3), "(B, 2, 3)")
    _check_shape("inner", inner, (2, 3), "(B, 2, 3)")
    linear = outer[:, :, :2] @ inner[:, :, :2]
    return torch.cat([linear, outer[:, :, :2] @ inner[:, :, 2:] + outer[:, :, 2:]], -1)


def box_areas(boxes: torch.Tensor) -> torch.Tensor:
    """(N,) areas of (N, 4) boxes."""
    _check_shape("boxes", boxes, (4,), "(N, 4)")
    return (boxes[:, 2:] - boxes[:, :2]).prod(dim=-1)


def intersection_areas(boxes: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(N, M) areas of the intersections of (N, 4) boxes with (M, 4) others."""
    _check_shape("boxes", boxes, (4,), "(N, 4)")
    _check_shape("others", others, (4,), "(M, 4)")
    low = torch.maximum(boxes[:, None, :2], others[None, :, :2])
    high = torch.minimum(boxes[:, None, 2:], others[None, :, 2:])
    return (high - low).clamp(min=0).prod(dim=-1)


def box_iou(boxes: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(N, M) intersection over union of (N, 4) boxes with (M, 4) others; 0 where both are
    empty."""
    inter = intersection_areas(boxes, others)
    union = box_areas(boxes)[:, None] + box_areas(others)[None, :] - inter
    return inter / union.clamp(min=1e-12)
