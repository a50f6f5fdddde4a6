"""The converted weights shipped with keyfer (MediaPipe's BlazeFace and FaceMesh, dlib's
face-recognition ResNet), checked against ``SHA256SUMS`` on load.

Regenerate them from a source checkout with ``python -m tools.convert_mediapipe`` and
``python -m tools.convert_dlib`` (see the README).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import load

from keyfer.errors import WeightsError

WEIGHTS_DIR = Path(__file__).parent
SHA256SUMS = WEIGHTS_DIR / "SHA256SUMS"


def weight_path(name: str) -> Path:
    """Path of the shipped ``<name>.safetensors`` file."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def expected_sha256(sums: Path = SHA256SUMS) -> dict[str, str]:
    """{file name: sha256 hex} as recorded in ``sums`` (empty when the file does not exist)."""
    lines = sums.read_text().splitlines() if sums.is_file() else []
    return {fname: digest for digest, fname in (line.split() for line in lines if line.strip())}


@cache
def _read_verified(name: str) -> bytes:
    path = weight_path(name)
    if not path.is_file():
        raise WeightsError(f"shipped weights {path.name} are missing; reinstall keyfer")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256().get(path.name) != digest:
        raise WeightsError(f"{path} does not match its sha256 in SHA256SUMS; reinstall keyfer")
    return data


def load_weights(name: str) -> dict[str, torch.Tensor]:
    """The float32 state dict of a shipped network (stored in fp16)."""
    return {k: v.float() for k, v in load(_read_verified(name)).items()}
