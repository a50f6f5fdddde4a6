"""Writing the shipped weights' ``SHA256SUMS`` (keyfer only reads it, on load)."""

from __future__ import annotations

from pathlib import Path

from keyfer.faces.weights import SHA256SUMS, expected_sha256


def record_sha256(out_dir: Path, digests: dict[str, str]) -> str:
    """Set these files' lines in ``out_dir``'s SHA256SUMS, keeping the other files' lines;
    returns the new file's text."""
    sums = out_dir / SHA256SUMS.name
    entries = expected_sha256(sums) | digests
    text = "".join(f"{d}  {f}\n" for f, d in sorted(entries.items()))
    sums.write_text(text)
    return text
