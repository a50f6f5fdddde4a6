"""Pictures of evaluation results, drawn with OpenCV (no plotting library needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


_COLOURS = ((180, 100, 30), (40, 130, 240), (60, 160, 60), (160, 60, 160))  # BGR
_W, _H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 640, 400, 64, 24, 64, 64


def save_accuracy_png(
    path: Path,
    title: str,
    x_label: str,
    positions: Sequence[float],
    ticks: Sequence[str],
    series: Mapping[str, Sequence[float]],
    join: bool = True,
) -> None:
    """A chart of accuracies (fractions) at x ``positions`` labelled ``ticks``: one coloured
    series per entry of ``series``, its points joined by lines when ``join``, values written."""
    values = [v for ys in series.values() for v in ys]
    low = max(0.0, np.floor((min(values) - 0.02) * 20) / 20)
    high = min(1.0, np.ceil((max(values) + 0.02) * 20) / 20)
    x_low, x_high = min(positions), max(positions)
    inner = _W - _PAD_L - _PAD_R - 40

    def point(x: float, y: float) -> tuple[int, int]:
        across = (x - x_low) / (x_high - x_low) if x_high > x_low else 0.5
        up = (y - low) / max(high - low, 1e-9)
        return int(_PAD_L + 20 + across * inner), int(_H - _PAD_B - up * (_H - _PAD_T - _PAD_B))

    canvas = np.full((_H, _W, 3), 255, np.uint8)
    _text(canvas, title, (8, 20), 0.5)
    step = 0.05 if high - low <= 0.4 else 0.1
    for grid in np.arange(low, high + 1e-9, step):
        y = point(x_low, grid)[1]
        cv2.line(canvas, (_PAD_L, y), (_W - _PAD_R, y), (225, 225, 225), 1)
        _text(canvas, f"{grid:.2f}", (8, y + 4), 0.4, (90, 90, 90))
    for x, tick in zip(positions, ticks, strict=True):
        _text(canvas, tick, (point(x, low)[0] - 4 * len(tick), _H - _PAD_B + 18), 0.4)
    _text(canvas, x_label, (_W // 2 - 4 * len(x_label), _H - 16), 0.45, (90, 90, 90))
    for i, (name, ys) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        points = [point(x, y) for x, y in zip(positions, ys, strict=True)]
        if join:
            cv2.polylines(canvas, [np.array(points, np.int32)], False, colour, 2, cv2.LINE_AA)
        for (px, py), value in zip(points, ys, strict=True):
            cv2.circle(canvas, (px, py), 4, colour, -1, cv2.LINE_AA)
            _text(
                canvas, f"{value:.3f}", (px - 18, py - 8 if i % 2 == 0 else py + 18), 0.38, colour
            )
        _text(canvas, name, (_W - _PAD_R - 170, 20 + 16 * i), 0.42, colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)
