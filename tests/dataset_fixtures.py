"""Tiny datasets in the official on-disk formats, built from the face in examples/astronaut.png.

Each builder writes one layout under a root and returns the root. The rows include every kind
of bad row an adapter must count (documented per builder). Build them all with::

    python -m tests.dataset_fixtures OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from keyfer.io.images import read_image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "astronaut.png"
FACE_BOX = (168, 63, 114, 114)
"""(x, y, w, h) of a FERPlus-like face square in astronaut.png (brows to chin)."""
PHOTO_SCALE = 0.5
"""AffectNet and RAF-DB original photos are astronaut.png at half size (256x256)."""
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
    "valence,arousal"
)


def _photo(mirror: bool = False) -> np.ndarray:
    image = read_image(EXAMPLE)
    size = round(image.shape[1] * PHOTO_SCALE)
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image[:, ::-1] if mirror else image


def _face(size: int, gray: bool = False, mirror: bool = False) -> np.ndarray:
    """The face square of astronaut.png resized to ``size``; (size, size) if gray, else RGB."""
    x, y, w, h = FACE_BOX
    face = cv2.resize(read_image(EXAMPLE)[y : y + h, x : x + w], (size, size), cv2.INTER_AREA)
    face = face[:, ::-1] if mirror else face
    return cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if gray else np.ascontiguousarray(face)


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])


def make_rafdb(root: Path, original: bool = False) -> Path:
    """RAF-DB basic: train 2 usable lines + 1 bad label; test 2 usable (happiness, surprise)
    + 1 missing image + 1 bad label; 1 malformed line (counted in both splits). With
    ``original``, only ``Image/original/`` photos (faces to detect) instead of ``Image/aligned``."""
    lines = [
        "train_00001.jpg 4", "train_00002.jpg 7", "train_00003.jpg 0", "test_0001.jpg 4",
        "test_0002.jpg 1", "test_0003.jpg 6", "test_0004.jpg 9", "not a label line",
    ]  # fmt: skip
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    names = {"train_00001": False, "train_00002": True, "test_0001": False, "test_0002": True}
    for name, mirror in names.items():
        if original:
            _save(root / "Image" / "original" / f"{name}.jpg", _photo(mirror))
        else:
            _save(root / "Image" / "aligned" / f"{name}_aligned.jpg", _face(100, mirror=mirror))
    return root


def _affectnet_row(path: str, box: tuple[float, ...], expression: str) -> str:
    x, y, w, h = box
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    points = np.stack([x + w / 2 + w / 3 * np.cos(angles), y + h / 2 + h / 3 * np.sin(angles)], 1)
    landmarks = ";".join(f"{v:.2f}" for v in points.ravel())
    return f"{path},{x:g},{y:g},{w:g},{h:g},{landmarks},{expression},0.5,-0.25"


def make_affectnet(root: Path, lists_at_root: bool = False) -> Path:
    """AffectNet: per CSV, happiness (code 1) and neutral (0, mirrored photo) usable, contempt
    (7, usable for 8 classes only), codes 8 and 10 excluded, and one each of missing_image,
    bad_label and bad_box. The CSVs go in ``Manually_Annotated_file_lists/`` (or the root)."""
    scale = PHOTO_SCALE
    box = tuple(v * scale for v in FACE_BOX)
    mirrored = (256 - box[0] - box[2], *box[1:])
    images = root / "Manually_Annotated_Images"
    _save(images / "101" / "face.jpg", _photo())
    _save(images / "102" / "mirror.jpg", _photo(mirror=True))
    rows = [
        _affectnet_row("101/face.jpg", box, "1"),
        _affectnet_row("102/mirror.jpg", mirrored, "0"),
        _affectnet_row("101/face.jpg", box, "7"),
        _affectnet_row("101/face.jpg", box, "8"),
        _affectnet_row("102/mirror.jpg", mirrored, "10"),
        _affectnet_row("103/missing.jpg", box, "3"),
        _affectnet_row("101/face.jpg", box, "happy"),
        _affectnet_row("101/face.jpg", (box[0], box[1], 0, box[3]), "2"),
    ]
    lists = root if lists_at_root else root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    for name in ("training.csv", "validation.csv"):
        (lists / name).write_text("\n".join([AFFECTNET_HEADER, *rows]) + "\n")
    return root


def _pixels(image: np.ndarray) -> str:
    return " ".join(str(v) for v in image.ravel())


def make_fer2013_csv(root: Path) -> Path:
    """fer2013.csv: Training happy + angry; PublicTest neutral + happy usable, plus one
    bad_label and one bad_pixels (2303 values); PrivateTest fear; one unknown Usage."""
    face, mirror = _face(48, gray=True), _face(48, gray=True, mirror=True)
    rows = [
        f"3,{_pixels(face)},Training",
        f"0,{_pixels(mirror)},Training",
        f"6,{_pixels(mirror)},PublicTest",
        f"3,{_pixels(face)},PublicTest",
        f"9,{_pixels(face)},PublicTest",
        f"5,{_pixels(face.ravel()[:-1])},PublicTest",
        f"2,{_pixels(face)},PrivateTest",
        f"4,{_pixels(face)},Validation",
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "fer2013.csv").write_text("\n".join(["emotion,pixels,Usage", *rows]) + "\n")
    return root


def make_fer2013_folders(root: Path) -> Path:
    """The Kaggle layout: train/happy, train/angry and test/happy, test/neutral, 48x48 PNGs."""
    for split, folder, mirror in [("train", "happy", False), ("train", "angry", True),
                                  ("test", "happy", True), ("test", "neutral", False)]:  # fmt: skip
        path = root / split / folder / f"{split}_{folder}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), _face(48, gray=True, mirror=mirror))
    return root


def make_all(out: Path) -> dict[str, Path]:
    """Every fixture under ``out``: dataset name -> root."""
    return {
        "rafdb": make_rafdb(out / "rafdb"),
        "affectnet": make_affectnet(out / "affectnet"),
        "fer2013": make_fer2013_csv(out / "fer2013"),
        "fer2013_folders": make_fer2013_folders(out / "fer2013_folders"),
    }


if __name__ == "__main__":
    make_all(Path(sys.argv[1]))
