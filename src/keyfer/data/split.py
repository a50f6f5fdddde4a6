"""What every dataset adapter returns, and the tally of list-file rows it leaves out.

Rows are left out for two kinds of reasons, counted apart:

- ``skipped``: bad rows (a missing image file, an unknown or out-of-range label, a malformed
  line, a line that is not UTF-8 text, an image path that is absolute or climbs out with ``..``,
  a wrong pixel count, a bad face box). Never fatal: counted, and reported by one logged warning
  per list file.
- ``excluded``: rows the dataset's own protocol leaves out (FERPlus without a majority,
  AffectNet's "uncertain" or "non-face", contempt for AffectNet-7).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from keyfer.data.labels import Sample
from keyfer.errors import KeyferError

log = logging.getLogger(__name__)

MISSING_IMAGE = "missing_image"
BAD_LABEL = "bad_label"
MALFORMED_ROW = "malformed_row"
BAD_PIXELS = "bad_pixels"
BAD_BOX = "bad_box"

NOT_UTF8 = "not UTF-8 text"
"""What is wrong with a list-file row holding bytes that are not UTF-8 (e.g. Latin-1)."""


@dataclass
class DatasetSplit:
    """One split of a dataset. ``samples``: the usable rows, in file order. ``classes``: the
    dataset's canonical class names (its vocabulary, whatever this split happens to hold).
    ``skipped`` and ``excluded``: rows left out, counted by reason (see the module docstring).
    ``faces_overridden``: the samples' faces mode was set to one the adapter does not give them
    (:func:`keyfer.data.datasets.load_split`'s ``faces``)."""

    samples: list[Sample]
    classes: list[str]
    skipped: Counter[str] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)
    faces_overridden: bool = False


@dataclass
class RowTally:
    """Counts the rows of one list file that an adapter leaves out, keeping the first example
    of each bad-row reason for the warning."""

    source: Path
    skipped: Counter[str] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, line: int | None, detail: str) -> None:
        """Count a bad row of ``reason``; ``detail`` says what is wrong with line ``line`` (None:
        an image file, not a line of the list file)."""
        self.skipped[reason] += 1
        self.examples.setdefault(reason, detail if line is None else f"line {line}: {detail}")

    def exclude(self, reason: str) -> None:
        """Count a row the dataset's protocol leaves out."""
        self.excluded[reason] += 1

    def split(self, samples: list[Sample], classes: list[str]) -> DatasetSplit:
        """The :class:`DatasetSplit` of ``samples``, after one warning if rows were skipped."""
        if self.skipped:
            log.warning(
                "%s: %d bad rows skipped (%s); first of each: %s",
                self.source,
                sum(self.skipped.values()),
                ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items())),
                "; ".join(
                    f"{reason} at {self.examples[reason]}" for reason in sorted(self.skipped)
                ),
            )
        return DatasetSplit(samples, classes, self.skipped, self.excluded)


def read_csv_rows(
    path: Path, first_column: str | None, what: str, on_bad_row: Callable[[int, str], None]
) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of each non-empty row of a CSV list file, its header row
    (the row whose first field is ``first_column``; None: the file has no header) left out.

    A row with bytes that are not UTF-8 is left out too and passed to ``on_bad_row(line,
    detail)``, so that one bad byte skips its row, not the file. ``what`` names the file in the
    one-line error raised when it cannot be read at all."""
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            rows = list(csv.reader(handle))
    except (OSError, csv.Error) as exc:
        raise KeyferError(f"cannot read {what} {path}: {exc}") from exc
    numbered = []
    for line, row in enumerate(rows, start=1):
        if not row:
            continue
        if not all(map(is_utf8, row)):
            on_bad_row(line, NOT_UTF8)
            continue
        numbered.append((line, row))
    if numbered and first_column is not None and numbered[0][1][0].strip() == first_column:
        numbered = numbered[1:]
    return numbered


def is_utf8(text: str) -> bool:
    """Whether ``text``, decoded with ``errors="surrogateescape"``, came from valid UTF-8 (no
    byte had to be escaped as a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_count(text: str, maximum: int) -> int | None:
    """A list-file field as a whole number in 0..``maximum``, or None when it is anything else:
    a sign, a fraction, non-ASCII digits, a larger number. Surrounding spaces are allowed."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(maximum)):
        return None
    value = int(digits)
    return value if value <= maximum else None


def relative_image_path(folder: Path, name: str) -> Path | None:
    """``folder / name`` for an image path ``name`` read from a list file, or None when ``name``
    is empty, absolute, or has a ``..`` part (it would point outside ``folder``)."""
    relative = PurePath(name.strip())
    if not relative.parts or relative.is_absolute() or ".." in relative.parts:
        return None
    return folder / relative
