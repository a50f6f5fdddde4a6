"""dlib's face-chip alignment (``get_face_chip_details`` + ``extract_image_chip``) from 68 points.

dlib's face-recognition ResNet was trained on chips cut this way: a least-squares similarity
(Umeyama) from 33 iBUG-68 points (nose, eyes, upper lip; no jaw, brows or lower lip) onto dlib's
mean-face template, padded by 0.25 on every side, sampled into 150x150 pixels.

Convention: keyfer's continuous pixel coordinates (a pixel's centre at integer + 0.5), in the
image and in the chip; ``chip_to_image`` is the (2, 3) matrix mapping a chip point ``c`` to the
image point ``chip_to_image @ [c, 1]``.

Two of dlib's details are kept: the chip's pixel grid spans the similarity's 150-pixel square
minus one pixel (dlib's ``centered_drect``), and chips much smaller than their image region are
sampled from a 2x image pyramid, at the level dlib would choose. dlib's own pyramid filter is
replaced by OpenCV's ``pyrDown``; bilinear sampling, black outside the image.
"""

from __future__ import annotations

import cv2
import numpy as np

from keyfer.faces.dlib_resnet import CHIP_SIZE

DEFAULT_PADDING = 0.25
# dlib's average positions of iBUG points 18..68 (0-based 17..67) in a unit face square.
_MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
)  # fmt: skip
_MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
)  # fmt: skip
# The points dlib fits: nose, eyes and outer upper lip (27..54), inner upper lip (60..64).
ALIGNMENT_POINTS = (*range(27, 55), *range(60, 65))


def _umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity dst ~ A @ src + t for (N, 2) points (dlib's
    ``find_similarity_transform``); returns A (2, 2) and t (2,)."""
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mean_src, dst - mean_dst
    cov = dst_c.T @ src_c / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(cov) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / (src_c**2).sum(1).mean()
    linear = scale * rotation
    return linear, mean_dst - linear @ mean_src


def chip_transform(
    landmarks68: np.ndarray, size: int = CHIP_SIZE, padding: float = DEFAULT_PADDING
) -> np.ndarray:
    """The (2, 3) chip->image transform of dlib's face chip for (68, 2) iBUG points in pixels.

    dlib-exact on purpose: dlib's SVD fit (float64 NumPy) in dlib's frame, with its one-pixel
    shrink of the chip grid, for one face in a whole image. The appearance branch's
    :func:`keyfer.nkf.appearance.fit_crop_to_chip` fits the same points in closed form on
    tensors (batched, differentiable, exportable) and leaves the shrink out."""
    # Fit in dlib's frame (pixel centres at integers), where the template spans [0, size].
    linear, shift = _umeyama(
        chip_template(size, padding) - 0.5,
        np.asarray(landmarks68, np.float64)[ALIGNMENT_POINTS, :] - 0.5,
    )
    centre = linear @ np.full(2, size / 2) + shift
    scale = np.hypot(*linear[:, 0])
    # dlib's chip grid: pixel 0 and pixel size-1 sit on the edges of a (size*scale - 1) square.
    grid = linear / scale * (size * scale - 1) / (size - 1)
    offset = centre - grid @ np.full(2, (size - 1) / 2)
    # Back to keyfer's frame: image = grid @ (chip - 0.5) + offset + 0.5.
    return np.concatenate([grid, (offset + 0.5 - grid @ np.full(2, 0.5))[:, None]], 1)


def extract_chip(image: np.ndarray, chip_to_image: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """Sample the (size, size, 3) uint8 chip of an (H, W, 3) uint8 image (see the module doc)."""
    matrix = np.asarray(chip_to_image, np.float64)
    # OpenCV samples with pixel centres at integers: shift both frames by half a pixel.
    to_cv = matrix.copy()
    to_cv[:, 2] += matrix[:, :2] @ np.full(2, 0.5) - 0.5
    scale = np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    while scale > 2 and min(image.shape[:2]) > 1:  # dlib halves while the chip stays smaller
        image = cv2.pyrDown(image)
        to_cv /= 2
        scale /= 2
    return cv2.warpAffine(
        image, to_cv, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )  # fmt: skip


def chip_template(size: int = CHIP_SIZE, padding: float = DEFAULT_PADDING) -> np.ndarray:
    """(33, 2) float64 chip points, keyfer's frame (pixel centres at integer + 0.5), where dlib's
    similarity puts the iBUG-68 points of :data:`ALIGNMENT_POINTS`, in that order."""
    index = np.array(ALIGNMENT_POINTS) - 17
    template = (padding + np.stack([_MEAN_FACE_X, _MEAN_FACE_Y], 1)[index]) / (2 * padding + 1)
    return template * size + 0.5
