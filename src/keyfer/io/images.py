"""Read image files and arrays as (H, W, 3) uint8 RGB, and list the images a user names.

Every image comes out "as displayed": EXIF orientation applied, alpha composited onto white,
16-bit data scaled (not clipped) to 8 bits. Bad input raises :class:`ImageReadError` with the
file path in its message.

Pixel ranges: uint8 is 0..255, uint16 0..65535 and bool 0/1. Float pixels are 0..1 when none
is above 1, else 0..255 (clipped); 32-bit integer images (Pillow mode ``I``, e.g. int32 TIFFs)
are 8-bit when none is above 255, else 16-bit (clipped to 0..65535). When the range is guessed
from the values (floats above 1, 32-bit integers up to 255), a warning is logged.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from keyfer.errors import ImageReadError

log = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]
ImageInput = StrPath | Image.Image | np.ndarray
"""An image as the Python API takes it: a file path, a PIL image or an array (see
:func:`as_rgb_array`)."""

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".jp2", ".pbm", ".pgm",
     ".ppm", ".pnm"}
)  # fmt: skip
"""Lower-case suffixes that :func:`find_images` picks up inside folders (GIF: first frame)."""

MAX_PIXELS = 250_000_000
"""Images with more pixels than this are refused instead of decoded."""

# Pillow warns above its limit and refuses above twice it; raise it so that every image up to
# MAX_PIXELS loads silently. A limit the user set higher (or None, no limit) is kept.
if Image.MAX_IMAGE_PIXELS is not None:
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS, MAX_PIXELS)

_ARRAY_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "F", "I;16", "I;16L", "I;16B", "I;16N"})


def read_image(path: StrPath) -> np.ndarray:
    """Decode the image file at ``path`` to a new (H, W, 3) uint8 RGB C-contiguous array.

    H and W are those of the displayed image (EXIF orientation applied). Multi-frame files
    (GIF, TIFF) give their first frame. Modes are converted as in :func:`to_rgb_array`.
    """
    path = Path(path)
    problem = _file_problem(path)
    if problem is not None:
        raise _error(path, problem)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decode now, so truncated files fail here
                ImageOps.exif_transpose(img, in_place=True)
                rgb = _array_to_rgb(_pil_to_array(img, str(path)), str(path))
    except ImageReadError as exc:
        raise _error(path, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise _error(path, "not an image, or in a format Pillow cannot read") from exc
    except PermissionError as exc:
        raise _error(path, "permission denied") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        limit = Image.MAX_IMAGE_PIXELS or MAX_PIXELS
        raise _error(path, f"image too large (over {limit:,} pixels)") from exc
    except MemoryError as exc:
        raise _error(path, "not enough memory to decode it") from exc
    except Exception as exc:  # Pillow's decoders raise many exception types on malformed files.
        reason = f"corrupt or truncated file ({type(exc).__name__}: {exc})"
        raise _error(path, reason) from exc
    return rgb


def decoded_nbytes(path: StrPath) -> int:
    """Bytes of the array :func:`read_image` gives for ``path`` (H x W x 3), from the file's
    header alone; 0 when that cannot be read (reading the file will then fail and say why)."""
    if not os.path.isfile(path):  # a FIFO or a device would block or never end
        return 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
    except Exception:  # whatever Pillow raises, read_image reports it
        return 0
    return width * height * 3


def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Convert a PIL image or an array to a new (H, W, 3) uint8 RGB C-contiguous array.

    Arrays are (H, W), (H, W, 1) grey, (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA
    (RGB order, not OpenCV's BGR) of dtype bool, uint8, uint16 (scaled by ``>> 8``) or float
    (clipped, rounded): in [0, 1] when no value is above 1, else in [0, 255], with a logged
    warning that the range was guessed. Alpha is composited onto white. A PIL image's pixels are
    read the same way; its mode ``I`` (32-bit) is read as 8-bit when no value is above 255 (with
    a logged warning), else clipped to [0, 65535] and read as 16-bit, and its EXIF orientation
    is not applied (:func:`read_image` does that).
    """
    if isinstance(image, Image.Image):
        return _array_to_rgb(_pil_to_array(image, "the PIL image"), "the PIL image")
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, "the array")
    raise ImageReadError(f"expected a PIL image or a numpy array, got {type(image).__name__}")


def as_rgb_array(image: ImageInput) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array of a path (:func:`read_image`: EXIF rotation applied), a
    PIL image or an array (:func:`to_rgb_array`)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    return to_rgb_array(image)


@dataclass
class ImageListing:
    """What :func:`find_images` found.

    ``images``: paths to read, in order. ``skipped``: files inside folders left out for their
    extension. ``empty_folders``: folders the user named that hold no image files.
    """

    images: list[Path] = field(default_factory=list)
    skipped: int = 0
    empty_folders: list[Path] = field(default_factory=list)


def find_images(
    paths: StrPath | Iterable[StrPath], extensions: frozenset[str] = IMAGE_EXTENSIONS
) -> ImageListing:
    """List the images in ``paths``, in the order given.

    A named file is always kept, whatever its extension and even if it does not exist, so that
    reading it reports the problem. A folder is walked recursively (each folder's files, then its
    subfolders, both sorted by name), keeping files whose lower-cased suffix is in
    ``extensions`` (:data:`IMAGE_EXTENSIONS` by default); hidden files and folders (name
    starting with ``.``) inside it are ignored.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    listing = ImageListing()
    for path in map(Path, paths):
        if not path.is_dir():
            listing.images.append(path)
            continue
        found = _walk_folder(path, listing, extensions)
        if not found:
            listing.empty_folders.append(path)
    return listing


def _walk_folder(folder: Path, listing: ImageListing, extensions: frozenset[str]) -> int:
    """Append the images under ``folder`` to ``listing``; return how many were found."""
    found = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            if Path(name).suffix.lower() in extensions:
                listing.images.append(Path(root, name))
                found += 1
            else:
                listing.skipped += 1
    return found


def _error(path: Path, reason: str) -> ImageReadError:
    return ImageReadError(f"cannot read image {path}: {reason}")


def _file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file, or None when it is a non-empty regular
    file (after following symbolic links)."""
    try:
        info = path.stat()
    except ValueError:  # a NUL character in the name
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if path.is_symlink():
            return "broken symbolic link"
        if isinstance(exc, PermissionError):
            return "permission denied"
        return "no such file" if exc.errno in (errno.ENOENT, errno.ENOTDIR) else exc.strerror
    if stat.S_ISDIR(info.st_mode):
        return "it is a directory, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (FIFO, socket or device)"
    if info.st_size == 0:
        return "the file is empty (0 bytes)"
    return None


def _pil_to_array(img: Image.Image, source: str) -> np.ndarray:
    """Pixels of ``img`` in a form :func:`_array_to_rgb` accepts, keeping 16-bit precision;
    ``source`` names the image in a logged warning."""
    if img.mode in _ARRAY_MODES:
        return np.asarray(img)
    if img.mode == "I":
        return _int32_to_unsigned(np.asarray(img), source)
    has_alpha = "transparency" in img.info or any(b in ("A", "a") for b in img.getbands())
    try:
        return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    except ValueError as exc:
        raise ImageReadError(f"unsupported image mode {img.mode!r}") from exc


def _int32_to_unsigned(pixels: np.ndarray, source: str) -> np.ndarray:
    """Mode ``I`` (int32) pixels -> uint8 when no value is above 255 (an 8-bit image stored
    wide; logged as a guess), else uint16 (clipped to 0..65535)."""
    if pixels.size and pixels.max() <= 255:
        log.warning("%s: 32-bit integer pixels up to 255 are read as 8-bit (0..255)", source)
        return pixels.clip(0, 255).astype(np.uint8)
    return pixels.clip(0, 65535).astype(np.uint16)


def _array_to_rgb(pixels: np.ndarray, source: str) -> np.ndarray:
    """(H, W[, C]) array of a supported dtype -> new (H, W, 3) uint8 RGB C-contiguous array;
    ``source`` names the image in a logged warning."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(
            f"unsupported array shape {pixels.shape}: expected (H, W), (H, W, 1), (H, W, 2), "
            "(H, W, 3) or (H, W, 4)"
        )
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageReadError(f"the image is empty (shape {pixels.shape})")
    pixels = _to_uint8(pixels, source)
    if pixels.shape[2] in (2, 4):
        pixels = _composite_on_white(pixels[:, :, :-1], pixels[:, :, -1:])
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return np.array(pixels, order="C")


def _to_uint8(pixels: np.ndarray, source: str) -> np.ndarray:
    """Scale bool (0/255), uint16 (>> 8) or float pixels to uint8. Floats are in [0, 1] when no
    value is above 1, else in [0, 255] (a logged guess); both clipped and rounded."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * np.uint8(255)
    if pixels.dtype.type is np.uint16:  # either byte order
        return (pixels >> 8).astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.floating):
        if not np.isfinite(pixels).all():
            raise ImageReadError("the float image contains NaN or infinite values")
        top = float(pixels.max())
        if top > 1:
            log.warning("%s: float pixels up to %g are read as 0..255, not 0..1", source, top)
        scaled = np.rint(np.clip(pixels * (255.0 if top <= 1 else 1.0), 0.0, 255.0))
        return scaled.astype(np.uint8)
    raise ImageReadError(
        f"unsupported array dtype {pixels.dtype}: expected bool, uint8, uint16 or float"
    )


def _composite_on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) colour over a white background with uint8 (H, W, 1) alpha, rounded."""
    a = alpha.astype(np.uint16)
    # colour * a + 255 * (255 - a) <= 255 * 255, so uint16 cannot overflow.
    blended = colour.astype(np.uint16) * a + 255 * (255 - a) + 127
    return (blended // 255).astype(np.uint8)
