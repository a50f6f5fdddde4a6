"""Old public names kept importable for one more release, with a DeprecationWarning."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


def deprecated_alias(module: str, old: str, new: Any, message: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` (PEP 562) for ``module`` that serves the old name ``old``
    as ``new``, warning with ``message``; any other missing name is an AttributeError."""

    def __getattr__(name: str) -> Any:
        if name == old:
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            return new
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
