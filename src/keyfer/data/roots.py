"""Where the datasets are: one rule for every dataset root keyfer reads.

A root is a config's ``root:`` or a ``--root`` option. An absolute root is used as it is. A
relative root is taken under the base folder named by the environment variable ``KEYFER_DATA``
when that is set (and not empty), and under the current folder otherwise. With
``KEYFER_DATA=/data``, ``root: ferplus`` reads ``/data/ferplus``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "KEYFER_DATA"
"""The environment variable naming the base folder of relative dataset roots."""


def data_root(root: str | Path) -> Path:
    """The folder a dataset ``root`` names (``~`` expanded), by the rule of this module."""
    path = Path(root).expanduser()
    base = os.environ.get(DATA_ENV)
    if path.is_absolute() or not base:
        return path
    return Path(base).expanduser() / path


def missing_root_hint() -> str:
    """How to point keyfer at the data, for the error of a root that is not a folder."""
    base = os.environ.get(DATA_ENV)
    if base:
        return f"relative roots are under {DATA_ENV}={base}"
    return f"pass --root, or set {DATA_ENV} to the folder that holds your datasets"
