"""Drawing faces on images for ``--annotate``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

_BOX = (0, 255, 0)
_UNRELIABLE_BOX = (255, 176, 0)
_LANDMARK = (255, 64, 64)
_KEYPOINT = (0, 160, 255)
_TEXT = (0, 0, 0)
_LEGEND_BACKGROUND = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_UNRELIABLE_MARK = " ?"
_LEGEND_LOW, _LEGEND_HIGH = "low", "high keypoint importance"

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in integer pixels, x1 and y1 excluded
Colour = tuple[int, int, int]  # RGB


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """(H, W) heat in [0, 1] -> (H, W, 3) uint8 RGB of the importance colour map (JET: blue for
    low, red for high)."""
    levels = np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8)
    return cv2.applyColorMap(levels, cv2.COLORMAP_JET)[..., ::-1]


def _overlap(a: Rect, b: Rect) -> int:
    """The area two rectangles share, in pixels."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _moved_inside(rect: Rect, width: int, height: int) -> Rect:
    """``rect`` shifted (not resized) into a width x height image; one larger than the image
    keeps its top-left corner at (0, 0)."""
    x0 = max(0, min(rect[0], width - (rect[2] - rect[0])))
    y0 = max(0, min(rect[1], height - (rect[3] - rect[1])))
    return x0, y0, x0 + rect[2] - rect[0], y0 + rect[3] - rect[1]


def _least_covering(candidates: Sequence[Rect], taken: Sequence[Rect]) -> Rect:
    """The first of ``candidates`` that covers the least area of the ``taken`` rectangles."""
    return min(candidates, key=lambda rect: sum(_overlap(rect, other) for other in taken))


def _dashed_rectangle(
    canvas: np.ndarray,
    corner0: tuple[int, int],
    corner1: tuple[int, int],
    colour: Colour,
    thickness: int,
) -> None:
    """Draw the outline of the rectangle between two corners in dashes, in place."""
    (x0, y0), (x1, y1) = corner0, corner1
    dash = 3 * thickness + 2
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1], strict=True):
        length = max(abs(bx - ax), abs(by - ay), 1)
        for start in range(0, length, 2 * dash):
            stop = min(start + dash, length)
            begin = (ax + (bx - ax) * start // length, ay + (by - ay) * start // length)
            end = (ax + (bx - ax) * stop // length, ay + (by - ay) * stop // length)
            cv2.line(canvas, begin, end, colour, thickness, cv2.LINE_AA)


class _Text:
    """Text in OpenCV's simplex font at one ``scale`` and stroke ``thickness``, set in boxes
    with ``pad`` pixels around it."""

    def __init__(self, scale: float, thickness: int) -> None:
        self.scale, self.thickness, self.pad = scale, thickness, thickness + 1

    def size(self, text: str) -> tuple[int, int]:
        """Width and height of ``text``'s box, padding included."""
        (width, height), baseline = cv2.getTextSize(text, _FONT, self.scale, self.thickness)
        return width + 2 * self.pad, height + baseline + 2 * self.pad

    def draw(self, canvas: np.ndarray, text: str, left: int, top: int) -> None:
        """Write ``text`` in place in its box whose top-left corner is (left, top)."""
        height = cv2.getTextSize(text, _FONT, self.scale, self.thickness)[0][1]
        origin = (left + self.pad, top + self.pad + height)
        cv2.putText(canvas, text, origin, _FONT, self.scale, _TEXT, self.thickness, cv2.LINE_AA)


def _draw_label(
    canvas: np.ndarray, text: str, box: Rect, colour: Colour, font: _Text, taken: list[Rect]
) -> None:
    """Write ``text`` in place on a ``colour`` background above the face ``box``, or below it
    when that covers less of the ``taken`` rectangles (faces, other labels); always inside the
    image. The label's rectangle is added to ``taken``."""
    height, width = canvas.shape[:2]
    label_width, label_height = font.size(text)
    above = (box[0], box[1] - label_height, box[0] + label_width, box[1])
    below = (box[0], box[3], box[0] + label_width, box[3] + label_height)
    label = _least_covering([_moved_inside(r, width, height) for r in (above, below)], taken)
    cv2.rectangle(canvas, label[:2], (label[2] - 1, label[3] - 1), colour, cv2.FILLED)
    font.draw(canvas, text, label[0], label[1])
    taken.append(label)


def _draw_heat_legend(canvas: np.ndarray, font: _Text, taken: list[Rect]) -> None:
    """Draw, in place, a colour bar 'low [blue to red] high keypoint importance' on white in the
    image corner that covers the least of the ``taken`` rectangles (bottom left first)."""
    height, width = canvas.shape[:2]
    low_width, legend_height = font.size(_LEGEND_LOW)
    bar_width = 4 * legend_height
    legend_width = low_width + bar_width + font.size(_LEGEND_HIGH)[0]
    corners = [
        (0, height - legend_height), (width - legend_width, height - legend_height),
        (0, 0), (width - legend_width, 0),
    ]  # fmt: skip
    candidates = [
        _moved_inside((x, y, x + legend_width, y + legend_height), width, height)
        for x, y in corners
    ]
    x0, y0, x1, y1 = _least_covering(candidates, taken)
    canvas[y0:y1, x0:x1] = _LEGEND_BACKGROUND
    font.draw(canvas, _LEGEND_LOW, x0, y0)
    bar = canvas[y0 + font.pad : y1 - font.pad, x0 + low_width : x0 + low_width + bar_width]
    bar[:] = heat_colours(np.broadcast_to(np.linspace(0, 1, bar.shape[1]), bar.shape[:2]))
    font.draw(canvas, _LEGEND_HIGH, x0 + low_width + bar_width, y0)


def draw_faces(
    image: np.ndarray,
    boxes: np.ndarray,
    landmarks68: np.ndarray,
    keypoints6: np.ndarray | None = None,
    labels: Sequence[str] = (),
    reliable: Sequence[bool] = (),
    heat_legend: bool = False,
) -> np.ndarray:
    """A copy of an (H, W, 3) RGB image with each face's box, 68 landmarks and 6 keypoints,
    given as (N, 4) ``boxes`` x0, y0, x1, y1, (N, 68, 2) ``landmarks68`` and (N, 6, 2)
    ``keypoints6`` (or None) in image pixels, pixel centres at integer + 0.5.

    When given, each face's text label sits on a filled background above its box (below it when
    that overlaps fewer faces and labels), always inside the image. A face whose ``reliable``
    flag is false gets an amber dashed box instead of a green one and its label ends in '?'.
    ``heat_legend`` adds the colour bar of :func:`heat_colours` in a free corner."""
    canvas = np.ascontiguousarray(image.copy())
    thickness = max(1, round(max(image.shape[:2]) / 500))
    font = _Text(max(0.4, thickness * 0.5), thickness)
    # OpenCV draws at integer pixel centres; keyfer's centres are at +0.5.
    rects = np.round(np.asarray(boxes) - 0.5).astype(int).reshape(-1, 4).tolist()
    taken: list[Rect] = [(x0, y0, x1 + 1, y1 + 1) for x0, y0, x1, y1 in rects]
    flags = list(reliable) if reliable else [True] * len(rects)
    colours = [_BOX if flag else _UNRELIABLE_BOX for flag in flags]
    point_sets = [(np.asarray(landmarks68), _LANDMARK)]
    if keypoints6 is not None:
        point_sets.append((np.asarray(keypoints6), _KEYPOINT))
    for index, (x0, y0, x1, y1) in enumerate(rects):
        if flags[index]:
            cv2.rectangle(canvas, (x0, y0), (x1, y1), colours[index], thickness, cv2.LINE_AA)
        else:
            _dashed_rectangle(canvas, (x0, y0), (x1, y1), colours[index], thickness)
        radius = max(1, round((x1 - x0) / 90))
        for points, point_colour in point_sets:
            for x, y in np.round(points[index] - 0.5).astype(int):
                cv2.circle(canvas, (int(x), int(y)), radius, point_colour, -1, cv2.LINE_AA)
    if labels:
        for rect, label, flag, colour in zip(rects, labels, flags, colours, strict=True):
            text = label if flag else label + _UNRELIABLE_MARK
            _draw_label(canvas, text, (rect[0], rect[1], rect[2], rect[3]), colour, font, taken)
    if heat_legend:
        _draw_heat_legend(canvas, font, taken)
    return canvas


def save_rgb(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) RGB image; the format follows the suffix. OpenCV only encodes: Python
    writes the file, as OpenCV crashes on a path whose name is not UTF-8."""
    ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot write {path}: OpenCV cannot encode {path.suffix} images")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes())
