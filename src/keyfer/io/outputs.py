"""Where a run's outputs go: checking them before the first input, and naming the files written
for each input (annotated copies, annotated videos, aligned crops) so that none replaces another.

A per-input file is ``<folder>/<the input's path below the inputs' common root><suffix>``, e.g.
``photos/a/x.png`` with ``keyfer predict photos --annotate ann`` gives ``ann/a/x.png.jpg``. A name
that this run has already used (or that names one of its inputs or record files) gets a counter
before its extension, ``-2``, ``-3``, ... Bytes of a file name that are not UTF-8 are written as
``\\xNN``, so every output name is text that any library can open.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

from keyfer.errors import KeyferError

STDOUT = Path("-")
"""The output path that means standard output (``--jsonl -``, ``--csv -``)."""


class OutputError(KeyferError):
    """An output cannot be written where the user asked for it."""


def _nearest_existing(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing ancestor (absolute)."""
    path = Path(os.path.abspath(path))
    return next(candidate for candidate in (path, *path.parents) if candidate.exists())


def _check_creatable_below(path: Path) -> None:
    """Raise :class:`OutputError` unless the folders up to ``path`` exist or can be made."""
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise OutputError(f"cannot write {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: {existing} is not writable")


def _check_file(path: Path) -> None:
    """Raise :class:`OutputError` unless a file can be written at ``path``."""
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {path}: permission denied")
        return
    _check_creatable_below(path)


def _check_folder(path: Path) -> None:
    """Raise :class:`OutputError` unless files can be written in the folder ``path``."""
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"cannot write into {path}: it is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write into {path}: permission denied")
        return
    _check_creatable_below(path)


def check_outputs(
    files: Mapping[str, Path | None],
    folders: Mapping[str, Path | None] = MappingProxyType({}),
    inputs: Iterable[Path] = (),
) -> None:
    """Raise :class:`OutputError` unless each output file and folder, by its option name
    (``None``: not asked for), can be written (folders made when missing), no two options name
    one file and no output file is one of the ``inputs``. Creates and changes nothing;
    :data:`STDOUT` is always writable."""
    input_keys = {_key(path) for path in inputs}
    named: dict[str, str] = {}
    for option, path in files.items():
        if path is None:
            continue
        key = "-" if path == STDOUT else _key(path)
        if key in named:
            raise OutputError(f"{named[key]} and {option} both write {path}")
        if key in input_keys:
            raise OutputError(f"{option} {path} is an input; keyfer will not write over it")
        named[key] = option
        if path != STDOUT:
            _check_file(path)
    for path in folders.values():
        if path is not None:
            _check_folder(path)


def _key(path: Path) -> str:
    """A string that is equal for two spellings of one path (symlinks resolved)."""
    return os.path.normcase(os.path.realpath(path))


def _readable_name(path: Path) -> Path:
    """``path`` with the bytes that are not UTF-8 (surrogate escapes) written as ``\\xNN``."""
    return Path(os.fsencode(path).decode("utf-8", "backslashreplace"))


class OutputNames:
    """Names of the files a run writes per input (see the module docstring). ``inputs`` are the
    paths the user named: a folder is its own root, a file's root is its folder; with none, the
    root is the working folder. ``reserved`` paths (the inputs, the record files) are never
    given out."""

    def __init__(self, inputs: Iterable[Path] = (), reserved: Iterable[Path] = ()) -> None:
        roots = [os.path.abspath(p if p.is_dir() else p.parent) for p in map(Path, inputs)]
        self.root = Path(os.path.commonpath(roots) if roots else os.getcwd())
        self._taken = {_key(path) for path in reserved if path != STDOUT}

    def _relative(self, source: Path) -> Path:
        """``source`` below the common root (its name alone when it lies elsewhere)."""
        try:
            return Path(os.path.abspath(source)).relative_to(self.root)
        except ValueError:
            return Path(source.name)

    def path(self, folder: Path, source: Path, suffix: str) -> Path:
        """A new file name under ``folder`` for ``source``: its path below the root with
        ``suffix`` appended (e.g. ``.jpg``, ``_face0.png``), and a counter if already taken."""
        relative = _readable_name(self._relative(source))
        base = folder / relative.parent / f"{relative.name}{suffix}"
        candidate, counter = base, 1
        while _key(candidate) in self._taken:
            counter += 1
            candidate = base.with_name(f"{base.stem}-{counter}{base.suffix}")
        self._taken.add(_key(candidate))
        return candidate
