"""The ``keyfer`` command line: a thin layer over the library.

Exit codes: 0 when every input was read, 1 when some input could not be read or processed,
2 for a usage error (bad option, nothing to process).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import torch

from keyfer import __version__
from keyfer.device import resolve_device
from keyfer.errors import KeyferError
from keyfer.faces.pipeline import DEFAULT_MIN_PRESENCE, FacePipeline
from keyfer.io.records import RecordWriter
from keyfer.landmarks import run_landmarks

_FILE = click.Path(dir_okay=False, writable=True, path_type=Path)
_DIR = click.Path(file_okay=False, writable=True, path_type=Path)


class _Group(click.Group):
    """Turns keyfer's own errors into one line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyferError as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keyfer")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors.")
@click.pass_context
def main(ctx: click.Context, quiet: bool) -> None:
    """keyfer: facial expression recognition with Keypoint Features."""
    ctx.obj = {"quiet": quiet}
    logging.basicConfig(
        level=logging.ERROR if quiet else logging.INFO, format="keyfer: %(levelname)s: %(message)s"
    )


@main.command()
@click.pass_context
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "json_path", type=_FILE, help="Write all records to one JSON file.")
@click.option("--jsonl", "jsonl_path", type=_FILE, help="Stream records, one JSON line each.")
@click.option("--annotate", type=_DIR, help="Save copies with boxes and landmarks drawn here.")
@click.option(
    "--tiling/--no-tiling", default=True, show_default=True,
    help="Also search overlapping tiles for small faces (slower; off suits video).",
)  # fmt: skip
@click.option(
    "--refine", type=click.IntRange(0, 3), default=0, show_default=True,
    help="Re-run FaceMesh on a crop placed from its own mesh this many times "
    "(more accurate, no longer identical to MediaPipe).",
)  # fmt: skip
@click.option("--detector-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option(
    "--min-presence", type=click.FloatRange(0, 1), default=DEFAULT_MIN_PRESENCE,
    show_default=True, help="Drop detections whose FaceMesh face presence is lower.",
)  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for torch.")
def landmarks(
    ctx: click.Context,
    paths: tuple[Path, ...],
    json_path: Path | None,
    jsonl_path: Path | None,
    annotate: Path | None,
    tiling: bool,
    refine: int,
    detector_threshold: float,
    min_presence: float,
    device: str,
    threads: int | None,
) -> None:
    """Detect faces and their landmarks (box, 6 keypoints, iBUG-68, 468-point mesh).

    PATHS are image files or folders (walked recursively). Coordinates are original-image pixels
    after EXIF rotation, a pixel's centre at integer + 0.5.
    """
    if threads:
        torch.set_num_threads(threads)
    pipeline = FacePipeline(
        resolve_device(device), tiling, detector_threshold, min_presence, refine=refine
    )
    echo = json_path is None and jsonl_path is None
    header = {"keyfer_version": __version__}
    with RecordWriter(json_path, jsonl_path, header, echo=echo) as writer:
        summary = run_landmarks(paths, pipeline, writer, annotate)
    if summary.images == 0:
        raise click.UsageError("no images found in " + ", ".join(map(str, paths)))
    if not ctx.obj["quiet"]:
        click.echo(summary.line(), err=True)
    sys.exit(1 if summary.errors else 0)
