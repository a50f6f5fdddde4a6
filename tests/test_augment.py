"""The image engine's augmentation: the default unchanged by the domain ops, each domain op, the
domain preset, and the preview tool."""

from __future__ import annotations

import hashlib
from dataclasses import fields, replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from keyfer.data.augment import DOMAIN_AUGMENT, AugmentConfig, augment_face
from keyfer.errors import KeyferError
from keyfer.train.config import checked_fields
from tools.augment_preview import main as preview_main
from tools.augment_preview import preview_grid

# augment_face with AugmentConfig() before the domain ops existed, on face() with
# default_rng(seed): (sha256 of the output's bytes, first 16 hex digits; the generator's next
# integers(2**32) after the call). Seeds 2-5 erase a rectangle, 0 and 1 do not.
BEFORE_DOMAIN_OPS = {
    0: ("12c8b1637fd88374", 2715582399),
    1: ("689a16a19d12beff", 2765224490),
    2: ("653fc622dd33806b", 644512513),
    3: ("f4518a03400c1891", 2219382184),
    4: ("1ef412220fac61ea", 2049358780),
    5: ("b2bb2ba0919a4f26", 1007213646),
}

DOMAIN_OPS = [f.name for f in fields(AugmentConfig) if f.name.endswith("_prob")]
DOMAIN_OPS.remove("erase_prob")

# Every op of the default config off: the output is the input.
IDENTITY = AugmentConfig(
    flip=False, rotation=0, scale=0, shift=0, brightness=0, contrast=0, erase_prob=0
)


def face() -> np.ndarray:
    """A (192, 192, 3) uint8 RGB test image: colour gradients plus seeded noise."""
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:192, 0:192]
    base = np.stack([xx, yy, (xx + yy) // 2], -1) + rng.integers(0, 64, (192, 192, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", sorted(BEFORE_DOMAIN_OPS))
def test_default_config_augments_as_before_the_domain_ops(seed: int) -> None:
    rng = np.random.default_rng(seed)
    out = augment_face(face(), rng, AugmentConfig())
    digest = hashlib.sha256(out.tobytes()).hexdigest()[:16]
    assert (digest, int(rng.integers(2**32))) == BEFORE_DOMAIN_OPS[seed]


def test_ops_that_are_off_read_no_range_and_draw_nothing() -> None:
    # Off, every domain op's range may be anything: the output and the generator stay the same.
    odd_ranges = replace(
        AugmentConfig(),
        gamma=(3.0, 4.0),
        color_temperature=0.9,
        channel_gain=0.9,
        gradient=1.0,
        blur_sigma=(5.0, 6.0),
        motion_blur_length=(20, 30),
        downsample_side=(4, 5),
        jpeg_quality=(1, 2),
    )
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    same = augment_face(face(), rng_a, AugmentConfig())
    assert np.array_equal(augment_face(face(), rng_b, odd_ranges), same)
    assert rng_a.bit_generator.state == rng_b.bit_generator.state


def test_identity_config_returns_the_input() -> None:
    assert np.array_equal(augment_face(face(), np.random.default_rng(0), IDENTITY), face())


@pytest.mark.parametrize("op", DOMAIN_OPS)
def test_each_domain_op_changes_the_image_and_keeps_shape_and_dtype(op: str) -> None:
    out = augment_face(face(), np.random.default_rng(0), replace(IDENTITY, **{op: 1.0}))
    assert out.shape == (192, 192, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - face()).mean() > 1


def test_gray_gives_equal_channels_through_blur_resampling_and_jpeg() -> None:
    config = AugmentConfig(**{**DOMAIN_AUGMENT, "gray_prob": 1.0, "jpeg_prob": 1.0})
    for seed in range(5):
        out = augment_face(face(), np.random.default_rng(seed), config)
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert not np.array_equal(face()[..., 0], face()[..., 1])


@pytest.mark.parametrize("op", ["blur_prob", "motion_blur_prob", "downsample_prob", "jpeg_prob"])
def test_capture_ops_keep_the_mean(op: str) -> None:
    for seed in range(3):
        out = augment_face(face(), np.random.default_rng(seed), replace(IDENTITY, **{op: 1.0}))
        assert abs(out.mean() - face().mean()) < 1.5
        assert np.abs(out.mean((0, 1)) - face().mean((0, 1))).max() < 2


def test_gamma_above_one_darkens() -> None:
    config = replace(IDENTITY, gamma_prob=1.0, gamma=(2.0, 2.0))
    out = augment_face(face(), np.random.default_rng(0), config)
    expected = np.rint(255 * (face() / 255) ** 2).astype(np.uint8)
    assert np.array_equal(out, expected)


def test_gradient_brightens_one_side_and_darkens_the_other() -> None:
    flat = np.full((192, 192, 3), 128, np.uint8)
    config = replace(IDENTITY, gradient_prob=1.0, gradient=0.5)
    out = augment_face(flat, np.random.default_rng(0), config).astype(int)
    assert out.max() > 150 and out.min() < 106
    assert abs(out.mean() - 128) < 1


def test_domain_preset_turns_every_domain_op_on_as_config_keys() -> None:
    assert set(DOMAIN_AUGMENT) == set(DOMAIN_OPS)
    assert all(0.2 <= value <= 0.5 for value in DOMAIN_AUGMENT.values())
    checked = checked_fields(AugmentConfig, DOMAIN_AUGMENT, "train.augmentation.")
    assert AugmentConfig(**checked) == AugmentConfig(**DOMAIN_AUGMENT)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"jpeg_prob": 1.5}, "jpeg_prob must be in"),
        ({"blur_sigma": (2.0, 1.0)}, "blur_sigma must be a range"),
        ({"downsample_side": (0, 10)}, "downsample_side must be a range"),
        ({"jpeg_quality": (50, 120)}, "jpeg_quality must lie in"),
        ({"gradient": 1.5}, "gradient in"),
    ],
)
def test_bad_values_are_one_error_line(overrides: dict, message: str) -> None:
    with pytest.raises(KeyferError, match=message) as error:
        AugmentConfig(**overrides)
    assert "\n" not in str(error.value)


def test_preview_grid_starts_with_the_crop() -> None:
    grid = preview_grid(face(), AugmentConfig(**DOMAIN_AUGMENT), rows=2, cols=3, tile=64, seed=0)
    assert grid.shape == (128, 192, 3) and grid.dtype == np.uint8
    first = cv2.resize(face(), (64, 64), interpolation=cv2.INTER_AREA)
    assert np.array_equal(grid[:64, :64], first)
    assert not np.array_equal(grid[:64, 64:128], first)


def test_preview_tool_writes_the_grid(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image, out = tmp_path / "face.png", tmp_path / "grid.png"
    cv2.imwrite(str(image), face()[:, :, ::-1])
    argv = [str(image), "--out", str(out), "--faces", "precropped", "--rows", "2", "--tile", "32"]
    assert preview_main(argv) == 0
    assert cv2.imread(str(out)).shape == (64, 192, 3)
    assert preview_main([str(tmp_path / "missing.png"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
