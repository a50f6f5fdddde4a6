"""What every dataset adapter returns, and the tally of list-file rows it leaves out.

Rows are left out for two kinds of reasons, counted apart:

- ``skipped``: bad rows (a missing image file, an unknown or out-of-range label, a malformed
  line, a wrong pixel count, a bad face box). Never fatal: counted, and reported by one logged
  warning per list file.
- ``excluded``: rows the dataset's own protocol leaves out (FERPlus without a majority,
  AffectNet's "uncertain" or "non-face", contempt for AffectNet-7).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from keyfer.data.labels import Sample
from keyfer.errors import KeyferError

log = logging.getLogger(__name__)

MISSING_IMAGE = "missing_image"
BAD_LABEL = "bad_label"
MALFORMED_ROW = "malformed_row"
BAD_PIXELS = "bad_pixels"
BAD_BOX = "bad_box"


@dataclass
class DatasetSplit:
    """One split of a dataset. ``samples``: the usable rows, in file order. ``classes``: the
    dataset's canonical class names (its vocabulary, whatever this split happens to hold).
    ``skipped`` and ``excluded``: rows left out, counted by reason (see the module docstring)."""

    samples: list[Sample]
    classes: list[str]
    skipped: Counter[str] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)


@dataclass
class RowTally:
    """Counts the rows of one list file that an adapter leaves out, keeping the first example
    of each bad-row reason for the warning."""

    source: Path
    skipped: Counter[str] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, line: int, detail: str) -> None:
        """Count a bad row of ``reason``; ``detail`` says what is wrong with line ``line``."""
        self.skipped[reason] += 1
        self.examples.setdefault(reason, f"line {line}: {detail}")

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


def read_csv_rows(path: Path, first_column: str, what: str) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of each non-empty row of a CSV list file, its header row
    (the row whose first field is ``first_column``) left out. ``what`` names the file in the
    one-line error raised when it cannot be read."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KeyferError(f"cannot read {what} {path}: {exc}") from exc
    numbered = [(line, row) for line, row in enumerate(rows, start=1) if row]
    if numbered and numbered[0][1][0].strip() == first_column:
        numbered = numbered[1:]
    return numbered
