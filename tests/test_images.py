"""Tests for keyfer.io.images: decoding, mode conversion, errors and folder listing."""

from __future__ import annotations

import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keyfer.errors import ImageReadError, KeyferError
from keyfer.io.images import (
    IMAGE_EXTENSIONS,
    ImageListing,
    find_images,
    read_image,
    to_rgb_array,
)

RNG = np.random.default_rng(0)


def _save(img: Image.Image, path: Path, **params: object) -> Path:
    img.save(path, **params)
    return path


def _check_rgb(out: np.ndarray, height: int, width: int) -> None:
    assert out.shape == (height, width, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous and out.flags.writeable


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares a (width, height) 8-bit grey image but holds no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


# --- decoding -------------------------------------------------------------------------------


def test_rgb_png_round_trip_is_exact(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = read_image(_save(Image.fromarray(pixels), tmp_path / "a.png"))
    _check_rgb(out, 5, 7)
    np.testing.assert_array_equal(out, pixels)


def test_jpeg_loads_with_shape_and_colour(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (30, 20), (200, 40, 90)), tmp_path / "a.jpg", quality=95)
    out = read_image(path)
    _check_rgb(out, 20, 30)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), (200, 40, 90), atol=4)


@pytest.mark.parametrize("suffix", sorted(IMAGE_EXTENSIONS))
def test_every_listed_extension_is_readable(tmp_path: Path, suffix: str) -> None:
    path = _save(Image.new("RGB", (9, 6), (200, 40, 90)), tmp_path / f"a{suffix}")
    out = read_image(path)
    _check_rgb(out, 6, 9)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), (200, 40, 90), atol=10)


def test_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = _save(frames[0], tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert Image.open(path).n_frames == 2
    np.testing.assert_array_equal(read_image(path)[0, 0], (255, 0, 0))


def test_grayscale_gives_three_equal_channels(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    out = read_image(_save(Image.fromarray(grey), tmp_path / "a.png"))
    _check_rgb(out, 4, 6)
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], grey)


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_is_composited_on_white(tmp_path: Path, mode: str) -> None:
    colour = (10, 10, 10) if mode == "LA" else (200, 40, 90)
    img = Image.new("RGBA", (3, 1))
    img.putdata([(*colour, 0), (*colour, 255), (*colour, 128)])
    out = read_image(_save(img.convert(mode), tmp_path / "a.png"))
    _check_rgb(out, 1, 3)
    half = [(c * 128 + 255 * 127 + 127) // 255 for c in colour]
    np.testing.assert_array_equal(out[0], [(255, 255, 255), colour, half])


def _palette_image() -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    img.putdata([0, 1, 2])
    return img


def test_palette_without_transparency(tmp_path: Path) -> None:
    out = read_image(_save(_palette_image(), tmp_path / "a.png"))
    np.testing.assert_array_equal(out[0], [(255, 0, 0), (0, 255, 0), (0, 0, 255)])


def test_palette_with_transparency_becomes_white(tmp_path: Path) -> None:
    path = _save(_palette_image(), tmp_path / "a.png", transparency=1)
    assert Image.open(path).mode == "P"
    out = read_image(path)
    np.testing.assert_array_equal(out[0], [(255, 0, 0), (255, 255, 255), (0, 0, 255)])


def test_one_bit_image(tmp_path: Path) -> None:
    img = Image.new("1", (3, 2), 0)
    img.putpixel((1, 0), 1)
    out = read_image(_save(img, tmp_path / "a.png"))
    _check_rgb(out, 2, 3)
    expected = np.zeros((2, 3, 3), np.uint8)
    expected[0, 1] = 255
    np.testing.assert_array_equal(out, expected)


def test_cmyk_image(tmp_path: Path) -> None:
    img = Image.new("CMYK", (3, 1))
    img.putdata([(0, 0, 0, 0), (0, 255, 255, 0), (0, 0, 0, 255)])
    out = read_image(_save(img, tmp_path / "a.tif"))
    np.testing.assert_array_equal(out[0], [(255, 255, 255), (255, 0, 0), (0, 0, 0)])


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "a.png")
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(read_image(path)[0, :, 0], [0, 1, 128, 255])


def test_32_bit_integer_tiff_is_read_as_16_bit(tmp_path: Path) -> None:
    values = np.array([[-5, 0, 32768, 65535, 100_000]], np.int32)
    path = _save(Image.fromarray(values), tmp_path / "a.tif")
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(read_image(path)[0, :, 0], [0, 0, 128, 255, 255])


def test_float_tiff_is_read_in_0_1(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.5, 1.0, -1.0]], np.float32)
    path = _save(Image.fromarray(values), tmp_path / "a.tif")
    assert Image.open(path).mode == "F"
    np.testing.assert_array_equal(read_image(path)[0, :, 0], [0, 128, 255, 0])


def test_exif_orientation_6_rotates_jpeg_clockwise(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 8, 8))  # a red marker in the top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    out = read_image(_save(img, tmp_path / "a.jpg", exif=exif, quality=95))
    _check_rgb(out, 40, 20)
    # Turned 90 degrees clockwise for display, the top-left corner is now the top-right one.
    np.testing.assert_allclose(out[1:7, 13:19].reshape(-1, 3).mean(0), (255, 0, 0), atol=12)
    np.testing.assert_allclose(out[1:7, 1:7].reshape(-1, 3).mean(0), (0, 0, 255), atol=12)


@pytest.mark.parametrize(("orientation", "turns"), [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_matches_rot90(tmp_path: Path, orientation: int, turns: int) -> None:
    pixels = RNG.integers(0, 256, (4, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = read_image(_save(Image.fromarray(pixels), tmp_path / "a.png", exif=exif))
    np.testing.assert_array_equal(out, np.rot90(pixels, turns))


def test_one_pixel_image(tmp_path: Path) -> None:
    out = read_image(_save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "a.png"))
    np.testing.assert_array_equal(out, [[(1, 2, 3)]])


def test_8000_square_image_loads_without_warnings(tmp_path: Path) -> None:
    img = Image.fromarray(np.zeros((8000, 8000), np.uint8))
    path = _save(img, tmp_path / "big.png", compress_level=1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = read_image(path)
    assert time.perf_counter() - start < 5
    _check_rgb(out, 8000, 8000)
    assert out[-1, -1, 2] == 0


@pytest.mark.parametrize("size", [(20_000, 13_000), (40_000, 40_000)])
def test_too_large_image_is_refused(tmp_path: Path, size: tuple[int, int]) -> None:
    path = _png_header_only(tmp_path / "huge.png", *size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageReadError, match="too large") as info:
            read_image(path)
    assert not caught
    assert str(path) in str(info.value)


@pytest.mark.parametrize("size", [(10_000, 10_000), (14_000, 13_000)])
def test_below_the_limit_pillow_does_not_refuse(tmp_path: Path, size: tuple[int, int]) -> None:
    # Past Pillow's default limits (89 MP warns, 179 MP refuses) but under MAX_PIXELS: the
    # header is accepted and only the missing pixel data fails.
    path = _png_header_only(tmp_path / "huge.png", *size)
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        read_image(path)


# --- errors ---------------------------------------------------------------------------------


def _bad_file(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "missing.png"
    if kind == "directory":
        (tmp_path / "folder.png").mkdir()
        return tmp_path / "folder.png"
    if kind == "empty":
        (tmp_path / "empty.png").touch()
        return tmp_path / "empty.png"
    if kind == "text":
        (tmp_path / "x.png").write_text("not an image\n")
        return tmp_path / "x.png"
    if kind == "header-only":
        return _png_header_only(tmp_path / "header.png", 64, 64)
    noise = Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    whole = _save(noise, tmp_path / f"whole.{kind}")
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return cut


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "no such file"),
        ("directory", "directory"),
        ("empty", "empty"),
        ("text", "not an image"),
        ("header-only", "corrupt or truncated"),
        ("png", "corrupt or truncated"),
        ("jpg", "corrupt or truncated"),
    ],
)
def test_bad_file_raises_image_read_error(tmp_path: Path, kind: str, reason: str) -> None:
    path = _bad_file(tmp_path, kind)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(str(path))
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    assert isinstance(info.value, KeyferError)


def test_unreadable_file_says_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated: chmod does not stop root, which the tests may run as.
    path = _save(Image.new("RGB", (2, 2)), tmp_path / "a.png")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageReadError, match="permission denied"):
        read_image(path)


# --- arrays ---------------------------------------------------------------------------------


def test_array_grey_shapes() -> None:
    grey = RNG.integers(0, 256, (3, 5), dtype=np.uint8)
    for pixels in (grey, grey[:, :, None]):
        out = to_rgb_array(pixels)
        _check_rgb(out, 3, 5)
        np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))


def test_array_rgb_is_copied_and_made_contiguous() -> None:
    pixels = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    flipped = pixels[:, ::-1]
    out = to_rgb_array(flipped)
    _check_rgb(out, 3, 5)
    np.testing.assert_array_equal(out, flipped)
    out[:] = 0
    assert pixels.any()


def test_array_alpha_channels() -> None:
    rgba = np.array([[[200, 40, 90, 0], [200, 40, 90, 255], [0, 0, 0, 128]]], np.uint8)
    np.testing.assert_array_equal(
        to_rgb_array(rgba)[0], [(255, 255, 255), (200, 40, 90), (127, 127, 127)]
    )
    grey_alpha = np.array([[[50, 0], [50, 255]]], np.uint8)
    np.testing.assert_array_equal(to_rgb_array(grey_alpha)[0], [(255, 255, 255), (50, 50, 50)])


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        (np.array([[0.0, 0.5, 1.0, -0.2]], np.float32), [0, 128, 255, 0]),
        (np.array([[0.0, 0.5, 1.0]], np.float64), [0, 128, 255]),
        (np.array([[0, 257, 32768, 65535]], np.uint16), [0, 1, 128, 255]),
        (np.array([[0, 257, 32768, 65535]], ">u2"), [0, 1, 128, 255]),
        (np.array([[False, True]]), [0, 255]),
    ],
)
def test_array_dtypes_are_scaled(pixels: np.ndarray, expected: list[int]) -> None:
    out = to_rgb_array(pixels)
    _check_rgb(out, *pixels.shape)
    np.testing.assert_array_equal(out[0, :, 0], expected)
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])


def test_pil_image_input_matches_read_image(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 32768, 65535]], np.uint16).astype(">u2"))
    assert img.mode == "I;16B"
    np.testing.assert_array_equal(to_rgb_array(img)[0, :, 1], [0, 128, 255])
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    path = _save(cmyk, tmp_path / "a.tif")
    np.testing.assert_array_equal(to_rgb_array(cmyk), read_image(path))


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (np.zeros((4, 4, 5), np.uint8), "shape"),
        (np.zeros((1, 4, 4, 3), np.uint8), "shape"),
        (np.zeros(4, np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 4), np.int64), "dtype"),
        (np.full((2, 2), np.nan), "NaN"),
        ([[0, 1], [2, 3]], "numpy array"),
    ],
)
def test_bad_array_raises_image_read_error(image: object, reason: str) -> None:
    with pytest.raises(ImageReadError, match=reason):
        to_rgb_array(image)  # type: ignore[arg-type]


# --- find_images ----------------------------------------------------------------------------


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def test_find_images_walks_folders_sorted(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    expected = [
        _touch(root / "a.JPG"),
        _touch(root / "b.png"),
        _touch(root / "sub" / "c.webp"),
        _touch(root / "sub" / "deeper" / "d.tiff"),
        _touch(root / "zub" / "e.jpeg"),
    ]
    _touch(root / "notes.txt")
    _touch(root / ".hidden.png")
    _touch(root / ".git" / "f.png")
    listing = find_images([root])
    assert listing == ImageListing(images=expected, skipped=1, empty_folders=[])


def test_find_images_keeps_named_files_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    image = _touch(folder / "a.png")
    named = [_touch(tmp_path / "notes.txt"), tmp_path / "missing.jpg", _touch(tmp_path / ".h.png")]
    listing = find_images([str(named[0]), folder, *named[1:]])
    assert listing.images == [named[0], image, *named[1:]]
    assert listing.skipped == 0


def test_find_images_reports_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "texts" / "a.txt")
    image = _touch(tmp_path / "full" / "a.bmp")
    listing = find_images([tmp_path / "empty", tmp_path / "texts", tmp_path / "full"])
    assert listing.images == [image]
    assert listing.skipped == 1
    assert listing.empty_folders == [tmp_path / "empty", tmp_path / "texts"]


def test_find_images_accepts_a_single_path(tmp_path: Path) -> None:
    image = _touch(tmp_path / "a.png")
    assert find_images(str(tmp_path)).images == [image]
    assert find_images(image).images == [image]
