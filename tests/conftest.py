"""Shared fixtures: the example image, one pipeline per session, and the TFLite reference."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from keyfer.data.roots import DATA_ENV, data_root
from keyfer.faces.pipeline import FacePipeline
from keyfer.io.images import read_image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "astronaut.png"
MEDIAPIPE_CACHE = ROOT / ".cache" / "mediapipe"


def real_data(name: str) -> Path:
    """Folder ``name`` (``afw``, ``ferplus``) of the real datasets, under ``$KEYFER_DATA``."""
    return data_root(name)


def needs_real_data(name: str) -> pytest.MarkDecorator:
    """Skips a test unless the real dataset folder ``name`` is under ``$KEYFER_DATA``."""
    present = bool(os.environ.get(DATA_ENV)) and real_data(name).is_dir()
    reason = f"needs the real {name} data: set {DATA_ENV} to the folder holding {name}/"
    return pytest.mark.skipif(not present, reason=reason)


_HAVE_REFERENCE = importlib.util.find_spec("ai_edge_litert") is not None and any(
    MEDIAPIPE_CACHE.glob("mediapipe-0.10.21-*.whl")
)
needs_tflite = pytest.mark.skipif(
    not _HAVE_REFERENCE,
    reason="needs ai-edge-litert and the mediapipe wheel in .cache/mediapipe "
    "(the README's test command installs and fetches both)",
)


@pytest.fixture(scope="session", autouse=True)
def _deterministic_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory) -> None:
    """Exports made on first use (the onnx backend) go to a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return read_image(EXAMPLE)


TIGHT_CORNER = (188, 96)
"""Top-left corner (x, y) of :func:`tight_crop` in the example image."""


@pytest.fixture(scope="session")
def tight_crop(astronaut) -> np.ndarray:
    """(71, 74, 3) the example's face cut inside her brows and jaw line: a tight face crop that
    the detector misses (the whole-image fallback finds it)."""
    x, y = TIGHT_CORNER
    return np.ascontiguousarray(astronaut[y : y + 71, x : x + 74])


@pytest.fixture(scope="session")
def pipeline() -> FacePipeline:
    return FacePipeline()


@pytest.fixture(scope="session")
def pipeline_no_tiling() -> FacePipeline:
    return FacePipeline(tiling=False)
