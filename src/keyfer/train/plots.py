"""Pictures of evaluation results, drawn with OpenCV (no plotting library needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

_CELL = 64
_LEFT = 100
_TOP = 70
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(
    canvas: np.ndarray, text: str, at: tuple[int, int], scale: float, colour=(0, 0, 0)
) -> None:
    cv2.putText(canvas, text, at, _FONT, scale, colour, 1, cv2.LINE_AA)


def save_confusion_png(
    path: Path, confusion: np.ndarray, classes: Sequence[str], title: str
) -> None:
    """Row-normalised confusion matrix (rows true, columns predicted) with counts, as a PNG."""
    n = len(classes)
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    canvas = np.full((_TOP + n * _CELL + 10, _LEFT + n * _CELL + 10, 3), 255, np.uint8)
    _text(canvas, title, (8, 20), 0.5)
    _text(canvas, "rows: true, columns: predicted", (8, 40), 0.4, (90, 90, 90))
    for i in range(n):
        _text(canvas, classes[i][:4], (_LEFT + i * _CELL + 14, _TOP - 8), 0.42)
        _text(canvas, classes[i][:10], (6, _TOP + i * _CELL + 36), 0.42)
        for j in range(n):
            x0, y0 = _LEFT + j * _CELL, _TOP + i * _CELL
            shade = int(255 * (1 - rates[i, j]))
            cv2.rectangle(
                canvas, (x0, y0), (x0 + _CELL - 1, y0 + _CELL - 1), (255, shade, shade), -1
            )
            ink = (255, 255, 255) if rates[i, j] > 0.5 else (0, 0, 0)
            _text(canvas, f"{rates[i, j]:.2f}", (x0 + 12, y0 + 28), 0.45, ink)
            _text(canvas, str(int(confusion[i, j])), (x0 + 12, y0 + 48), 0.38, ink)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)
