"""SSD anchors of BlazeFace short-range, as MediaPipe's ``SsdAnchorsCalculator`` makes them.

Options of ``face_detection_short_range``: 4 layers with strides 8, 16, 16, 16, one aspect ratio
plus one interpolated scale, fixed anchor size. Layers of equal stride share a feature map, so the
16x16 map has 2 anchors per cell and the 8x8 map has 6: 512 + 384 = 896 anchors.
"""

from __future__ import annotations

import torch

INPUT_SIZE = 128
_ANCHORS_PER_CELL = {8: 2, 16: 6}


def short_range_anchors() -> torch.Tensor:
    """(896, 2) anchor centres (x, y), normalised to [0, 1] over the 128x128 input.

    Order: the stride-8 map then the stride-16 map; within a map y, then x, then the cell's anchors.
    """
    centres = []
    for stride, per_cell in _ANCHORS_PER_CELL.items():
        cells = INPUT_SIZE // stride
        grid = (torch.arange(cells, dtype=torch.float32) + 0.5) / cells
        y, x = torch.meshgrid(grid, grid, indexing="ij")
        xy = torch.stack([x, y], dim=-1).reshape(-1, 1, 2).expand(-1, per_cell, 2)
        centres.append(xy.reshape(-1, 2))
    return torch.cat(centres)
