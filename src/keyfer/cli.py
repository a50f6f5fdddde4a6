"""The ``keyfer`` command line: a thin layer over the library.

Exit codes: 0 when every input was read, 1 when some input could not be read or processed,
2 for a usage error (bad option, nothing to process, an output that cannot be written).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import click
import numpy as np
import torch

from keyfer import __version__
from keyfer.data.datasets import DATASETS
from keyfer.data.labels import FACES_MODES
from keyfer.device import resolve_device
from keyfer.errors import KeyferError
from keyfer.faces.pipeline import DEFAULT_MIN_PRESENCE, FacePipeline
from keyfer.io.images import ImageListing
from keyfer.io.outputs import STDOUT, OutputError, OutputNames, check_outputs
from keyfer.io.records import RecordWriter
from keyfer.models.registry import DEFAULT_MODEL, create_model
from keyfer.nkf.model import NKFModel
from keyfer.robustness import (
    FILLS,
    Occlusion,
    RobustnessSpec,
    parse_landmark_noise,
    parse_occlusions,
)
from keyfer.runner import RunSummary, landmarks_describer, list_inputs, run_images

_device_option = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
)


def _set_torch_threads(
    _ctx: click.Context, _param: click.Parameter, threads: int | None
) -> int | None:
    """``--threads``, the one place the CLI sets torch's CPU threads (for the whole process)."""
    if threads:
        torch.set_num_threads(threads)
    return threads


_threads_option = click.option(
    "--threads", type=click.IntRange(1), callback=_set_torch_threads, help="CPU threads for torch."
)
_model_option = click.option(
    "--model",
    "model_name",
    default=DEFAULT_MODEL,
    show_default=True,
    help="A shipped model name (see keyfer models) or a checkpoint path.",
)
_FILE = click.Path(dir_okay=False, writable=True, path_type=Path)
_RECORDS = click.Path(dir_okay=False, writable=True, allow_dash=True, path_type=Path)
_json_option = click.option(
    "--json", "json_path", type=_RECORDS, help="Write all records to one JSON file (- for stdout)."
)
_jsonl_option = click.option(
    "--jsonl",
    "jsonl_path",
    type=_RECORDS,
    help="Stream records, one JSON line each (- for stdout).",
)
_fallback_option = click.option(
    "--fallback/--no-fallback",
    default=True,
    show_default=True,
    help="Where no face is found, try the whole image as one face (a tight face crop); its "
    'faces have "found_by": "whole-image".',
)
_DIR = click.Path(file_okay=False, writable=True, path_type=Path)


def _parsed(parse: Callable[[str], tuple]) -> Callable[..., tuple]:
    """A click callback that parses an option's text, a KeyferError becoming a usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple:
        try:
            return () if value is None else parse(value)
        except KeyferError as error:
            raise click.BadParameter(str(error), ctx, param) from error

    return callback


class _OutputFailure(click.ClickException):
    """An output that cannot be written: exit code 2, like a usage error."""

    exit_code = 2


class _Group(click.Group):
    """Turns keyfer's own errors into one line and exit code 1 (2 for an output that cannot be
    written, a usage error), never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyferError as error:
            failure = _OutputFailure if isinstance(error, OutputError) else click.ClickException
            raise failure(str(error)) from error


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keyfer")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors.")
@click.pass_context
def main(ctx: click.Context, quiet: bool) -> None:
    """keyfer: facial expression recognition with Keypoint Features."""
    ctx.obj = {"quiet": quiet}
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")
    logging.getLogger("keyfer").setLevel(logging.ERROR if quiet else logging.INFO)


def _checked_run(
    paths: Sequence[Path],
    videos: bool,
    files: Mapping[str, Path | None],
    folders: Mapping[str, Path | None],
) -> tuple[ImageListing, OutputNames]:
    """The inputs under ``paths`` and the names of their per-input outputs, once the inputs
    and every output are checked, before anything is read or written: a usage error when
    there is nothing to process, :class:`OutputError` when an output cannot be written."""
    listing = list_inputs(paths, videos)
    if not listing.images:
        what = "images or videos" if videos else "images"
        raise click.UsageError(f"no {what} found in " + ", ".join(map(str, paths)))
    check_outputs(files, folders, listing.images)
    outputs = [path for path in files.values() if path is not None]
    return listing, OutputNames(paths, reserved=[*listing.images, *outputs])


def _annotation_path(names: OutputNames, folder: Path | None) -> Callable[[Path], Path] | None:
    """Where each image's annotated copy goes: ``<folder>/<its name>.jpg`` (OutputNames)."""
    return None if folder is None else partial(names.path, folder, suffix=".jpg")


def _finish_run(
    ctx: click.Context, summary: RunSummary, outputs: Mapping[str, Path | None]
) -> None:
    """The end of a per-image run: the summary line with where each output went, and the exit
    code (1 when some input could not be read)."""
    if not ctx.obj["quiet"]:
        places = [
            f"{option}: {'stdout' if path == STDOUT else path}"
            for option, path in outputs.items()
            if path is not None
        ]
        click.echo("; ".join([summary.line(), *places]), err=True)
    sys.exit(1 if summary.errors else 0)


@main.command()
@click.pass_context
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@_json_option
@_jsonl_option
@click.option("--annotate", type=_DIR, help="Save copies with boxes and landmarks drawn here.")
@click.option(
    "--tiling/--no-tiling",
    default=True,
    show_default=True,
    help="Also search overlapping tiles for small faces (slower; off suits video).",
)
@click.option(
    "--refine",
    type=click.IntRange(0, 3),
    default=0,
    show_default=True,
    help="Re-run FaceMesh on a crop placed from its own mesh this many times "
    "(more accurate, no longer identical to MediaPipe).",
)
@click.option("--detector-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option(
    "--min-presence",
    type=click.FloatRange(0, 1),
    default=DEFAULT_MIN_PRESENCE,
    show_default=True,
    help="Drop detections whose FaceMesh face presence is lower.",
)
@_fallback_option
@_device_option
@_threads_option
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
    fallback: bool,
    device: str,
    threads: int | None,
) -> None:
    """Detect faces and their landmarks (box, 6 keypoints, iBUG-68, 468-point mesh).

    PATHS are image files or folders (walked recursively). Coordinates are original-image pixels
    after EXIF rotation, a pixel's centre at integer + 0.5.
    """
    files = {"--json": json_path, "--jsonl": jsonl_path}
    listing, names = _checked_run(paths, False, files, {"--annotate": annotate})
    pipeline = FacePipeline(
        resolve_device(device),
        tiling,
        detector_threshold,
        min_presence,
        refine=refine,
        fallback=fallback,
    )
    echo = json_path is None and jsonl_path is None
    header = {"keyfer_version": __version__}
    with RecordWriter(json_path, jsonl_path, header, echo=echo) as writer:
        describe = landmarks_describer(pipeline)
        annotation = _annotation_path(names, annotate)
        summary = run_images(listing, describe, writer, annotation, "landmarks")
    _finish_run(ctx, summary, {**files, "--annotate": annotate})


@main.command()
@click.argument("config", required=False)
@click.option("--list", "list_configs", is_flag=True, help="List the shipped configs and exit.")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="The dataset root, instead of the config's root (a config of one source). A relative "
    "root (here or in the config) is under the folder $KEYFER_DATA names when that is set.",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="The folder that holds the datasets: relative roots are under it (sets $KEYFER_DATA "
    "for the run).",
)
@click.option(
    "--faces",
    type=click.Choice(FACES_MODES),
    help="How the faces of every source's images are found, instead of each source's faces: "
    "(auto: detect, else the whole image as a face crop; detect; precropped). Default: the "
    "dataset's own.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set train.epochs=5 --set model.rkfa=both.",
)
@click.option("--out", type=_DIR, help="Run folder (default: runs/<name>).")
@click.option("--resume", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_device_option
@_threads_option
def train(
    config: str | None,
    list_configs: bool,
    root: Path | None,
    data_root: Path | None,
    faces: str | None,
    overrides: tuple[str, ...],
    out: Path | None,
    resume: Path | None,
    device: str,
    threads: int | None,
) -> None:
    """Train an NKF expression model from CONFIG: the name of a shipped config (e.g. quick;
    see --list) or the path of a YAML file.

    Writes checkpoint.pt (with its config), train.log and metrics.json to the run folder. On
    several GPUs or nodes: torchrun --nproc_per_node=N -m keyfer.cli train CONFIG ...
    """
    import os

    from keyfer.data.roots import DATA_ENV
    from keyfer.train.config import config_summary, find_config, load_experiment, shipped_configs
    from keyfer.train.distributed import is_main_process
    from keyfer.train.run import train_experiment
    from keyfer.train.validation import accuracies_text

    if list_configs:
        for name, path in shipped_configs().items():
            click.echo(f"{name:<24} {config_summary(path)}")
        return
    if config is None:
        raise click.UsageError("give a CONFIG (a shipped config's name or a YAML path), or --list")
    experiment = load_experiment(find_config(config), list(overrides))
    if root is not None:
        if len(experiment.sources) > 1:
            raise click.UsageError(
                "--root replaces the root of a config of one source; this one has "
                f"{len(experiment.sources)}: give --data-root, the folder that holds them"
            )
        experiment = experiment.with_sources(root=str(root))
    if faces is not None:
        experiment = experiment.with_sources(faces=faces)
    run_dir = out or Path("runs") / experiment.name
    base = os.environ.get(DATA_ENV)
    if data_root is not None:
        os.environ[DATA_ENV] = str(data_root)
    try:
        metrics = train_experiment(experiment, run_dir, resume, resolve_device(device))
    finally:  # $KEYFER_DATA as it was: --data-root is for this run only
        if base is not None:
            os.environ[DATA_ENV] = base
        elif data_root is not None:
            del os.environ[DATA_ENV]
    if is_main_process():
        line = (
            f"valid accuracy {metrics['accuracy']:.4f}, mean class accuracy "
            f"{metrics['mean_class_accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"
        )
        if len(metrics["domains"]) > 1:
            each = accuracies_text({k: d["accuracy"] for k, d in metrics["domains"].items()})
            line += f"; mean domain accuracy {metrics['mean_domain_accuracy']:.4f} ({each})"
        click.echo(line)


@main.command(name="eval")
@_model_option
@click.option(
    "--dataset",
    type=click.Choice(list(DATASETS)),
    help="The dataset to score on. Without it, the model is scored on each of its training "
    "sources' eval splits (their roots under $KEYFER_DATA), one row each.",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --dataset: the dataset root as distributed: the folder holding data/FER2013*/ "
    "(ferplus), fer2013.csv or train/ and test/ (fer2013), EmoLabel/ and Image/ (rafdb), "
    "Manually_Annotated_* (affectnet, affectnet7), Train/ (sfew), images/ (tfeid), legend.csv "
    "and images/ (muxspace), or the class folders (folder). A relative root is under the "
    "folder $KEYFER_DATA names when that is set.",
)
@click.option(
    "--split",
    help="ferplus: train, valid or test; fer2013: train, publictest or privatetest (CSV), "
    "train or test (folders); rafdb: train or test; affectnet, affectnet7: train or "
    "validation; sfew, tfeid, muxspace: train, valid or all; folder: omit (or all). Never a "
    "split the model was trained on.",
)
@click.option(
    "--faces",
    type=click.Choice(FACES_MODES),
    help="How each image's face is found: auto (detect as keyfer predict does, else the whole "
    "image as a face crop when FaceMesh sees a face in it), detect (the largest detected face), "
    "precropped (the image is the face crop, padded to a square). Default: the dataset's own "
    "(auto for folder; precropped for ferplus, fer2013, rafdb aligned, affectnet boxes).",
)
@click.option("--json", "json_path", type=_FILE, help="Write the full report as JSON.")
@click.option(
    "--plots",
    type=_DIR,
    help="Write a confusion-matrix PNG, a per-class report and any robustness-curve PNGs.",
)
@click.option("--tta", type=click.Choice(["flip"]), help="Average with the mirrored face.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option(
    "--landmark-noise",
    metavar="SIGMAS",
    callback=_parsed(parse_landmark_noise),
    help="Also score with every keypoint moved by N(0, (sigma x IOD)^2), for each "
    "comma-separated sigma, e.g. 0,0.02,0.05,0.1.",
)
@click.option(
    "--occlusion",
    metavar="LIST",
    callback=_parsed(parse_occlusions),
    help="Also score occluded crops: comma-separated square patch sides as a fraction of the "
    "192 px crop (at a random point of the face), and/or eyes, mouth, e.g. 0.1,0.2,eyes,mouth.",
)
@click.option("--occlusion-fill", type=click.Choice(list(FILLS)), default="gray", show_default=True)
@click.option(
    "--seed",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Seed of the landmark noise and patch positions.",
)
@_device_option
@_threads_option
def evaluate_command(
    model_name: str,
    dataset: str | None,
    root: Path | None,
    split: str | None,
    faces: str | None,
    json_path: Path | None,
    plots: Path | None,
    tta: str | None,
    batch_size: int,
    landmark_noise: tuple[float, ...],
    occlusion: tuple[Occlusion, ...],
    occlusion_fill: str,
    seed: int,
    device: str,
    threads: int | None,
) -> None:
    """Score an expression model on a labelled dataset split; without --dataset, on each of its
    training sources' eval splits (a domain each, on its own classes), with their mean.

    With --landmark-noise and --occlusion, the report also holds robustness curves (printed,
    and plotted with --plots); see docs/method.md, 'Evaluation'. Images without a face crop
    (unreadable, or no face found) are left out and counted by reason.
    """
    import json

    model = create_model(model_name).to(resolve_device(device)).eval()
    robustness = None
    if landmark_noise or occlusion:
        robustness = RobustnessSpec(landmark_noise, occlusion, occlusion_fill, seed)
    score = partial(
        _score_split, model, tta_flip=tta == "flip", batch_size=batch_size,
        robustness=robustness, plots=plots,
    )  # fmt: skip
    if dataset is not None:
        if root is None:
            raise click.UsageError("--dataset needs --root, the folder of the dataset")
        report = score(dataset, root, split, faces, f"{dataset}_{split or 'all'}")
    elif root is not None or split is not None:
        raise click.UsageError("--root and --split go with --dataset")
    else:
        report = _score_domains(model_name, faces, score)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1) + "\n")


def _score_split(
    model: NKFModel,
    dataset: str,
    root: Path,
    split: str | None,
    faces: str | None,
    stem: str,
    tta_flip: bool,
    batch_size: int,
    robustness: RobustnessSpec | None,
    plots: Path | None,
) -> dict:
    """``keyfer eval`` of ``model`` on one dataset split: its report, printed, and its plots
    under ``plots`` named ``<stem>_*``."""
    from keyfer.data.crops import left_out_text
    from keyfer.evaluate import check_not_trained_on, evaluate, load_dataset
    from keyfer.metrics.plots import save_confusion_png
    from keyfer.robustness import robustness_table, save_robustness_pngs

    info = model.info
    check_not_trained_on(info, dataset, split or "all")
    data = load_dataset(dataset, root, split, faces)
    report = evaluate(
        model,
        data.samples,
        data.classes,
        tta_flip=tta_flip,
        batch_size=batch_size,
        robustness=robustness,
    )
    report.update(
        dataset=dataset,
        split=split or "all",
        root=str(root),
        skipped_rows=dict(data.skipped),
        excluded_rows=dict(data.excluded),
    )
    click.echo(
        f"{info.name} on {dataset}/{split or 'all'} (n={report['n']}): accuracy "
        f"{report['accuracy']:.4f}, mean class accuracy {report['mean_class_accuracy']:.4f}, "
        f"macro-F1 {report['macro_f1']:.4f}"
    )
    left_out = left_out_text(report["left_out"])
    click.echo(
        f"scored {report['n']} of {report['images']} images"
        + (f"; left out: {left_out}" if left_out else "")
    )
    if report["restricted_to"]:
        click.echo(
            f"predictions restricted to the dataset's {len(report['restricted_to'])} classes "
            f"({', '.join(report['restricted_to'])}) of the model's {len(info.classes)}"
        )
    if robustness:
        click.echo(robustness_table(report))
    if plots:
        title = f"{info.name} on {dataset}/{split or 'all'}: accuracy {report['accuracy']:.4f}"
        save_confusion_png(
            plots / f"{stem}_confusion.png", np.array(report["confusion"]), report["classes"], title
        )
        lines = [f"{'class':<10} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>7}"]
        for name, row in report["per_class"].items():
            lines.append(
                f"{name:<10} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                f"{row['f1']:>6.3f} {row['support']:>7d}"
            )
        (plots / f"{stem}_report.txt").write_text("\n".join(lines) + "\n")
        save_robustness_pngs(report, plots, stem, title)
    return report


def _eval_sources(model_name: str) -> list[tuple[str, str, Path, str, str | None]]:
    """(name, dataset, root, eval split, faces mode) of each source a model trained on: a
    checkpoint's experiment sources, or a shipped model's ``trained_on`` datasets, each at its
    root under $KEYFER_DATA (``ferplus/``, ``sfew/``...) in its own faces mode."""
    from keyfer.data.datasets import training_splits
    from keyfer.models.registry import get_record, list_models
    from keyfer.train.checkpoint import load_checkpoint

    if model_name in list_models():
        datasets = get_record(model_name).trained_datasets
        return [(d, d, Path(d), training_splits(d)[1], None) for d in datasets]
    if not Path(model_name).is_file():
        raise click.UsageError(
            f"give --dataset and --root: {model_name} names no sources it was trained on"
        )
    experiment, _ = load_checkpoint(model_name)
    return [
        (str(s.name), s.dataset, Path(s.root), str(s.eval_split), s.faces)
        for s in experiment.sources
    ]


def _score_domains(model_name: str, faces: str | None, score: Callable[..., dict]) -> dict:
    """``keyfer eval`` without ``--dataset``: model ``model_name`` scored (``score``, a
    :func:`_score_split`) on each of its training sources' eval splits (:func:`_eval_sources`),
    in the source's faces mode (or ``faces``); prints one row per domain and their mean."""
    from keyfer.evaluate import domains_report

    report = domains_report(
        {
            name: score(dataset, root, split, faces or source_faces, f"{name}_{split}")
            for name, dataset, root, split, source_faces in _eval_sources(model_name)
        }
    )
    click.echo(f"{'domain':<16} {'split':<20} {'n':>6} {'accuracy':>9} {'macro-F1':>9}")
    for name, domain in report["domains"].items():
        where = f"{domain['dataset']}/{domain['split']}"
        click.echo(
            f"{name:<16} {where:<20} {domain['n']:>6} {domain['accuracy']:>9.4f} "
            f"{domain['macro_f1']:>9.4f}"
        )
    click.echo(f"{'mean':<16} {'':<20} {'':>6} {report['mean_accuracy']:>9.4f}")
    return report


@main.command(name="eval-landmarks")
@click.argument("records", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("annotations", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--results",
    type=_FILE,
    help="Add this run, named --variant, to this results JSON (its other runs are kept).",
)
@click.option(
    "--variant", default="default", show_default=True, help="The run's name in --results."
)
@click.option(
    "--command", "run_command", default="", help="The command that made RECORDS, kept in --results."
)
@click.option("--markdown", type=_FILE, help="Write a table of every run in --results here.")
def eval_landmarks(
    records: Path,
    annotations: Path,
    results: Path | None,
    variant: str,
    run_command: str,
    markdown: Path | None,
) -> None:
    """Score `keyfer landmarks --json` RECORDS against the 300-W .pts files of ANNOTATIONS (the
    AFW folder: 337 faces): recall, false positives per photo and NME68 over the iBUG 37-46
    distance. RECORDS must cover the folder's images (keyfer landmarks ANNOTATIONS --json FILE).
    """
    from keyfer import landmark_eval

    if markdown and not results:
        raise click.UsageError("--markdown tabulates the runs of --results: give --results too")
    metrics, _ = landmark_eval.score_landmarks(
        landmark_eval.read_records(records), landmark_eval.read_annotations(annotations)
    )
    click.echo(landmark_eval.summary_line(metrics))
    if results:
        data = landmark_eval.add_variant(results, variant, run_command, records, metrics)
        if markdown:
            markdown.write_text(landmark_eval.variants_markdown(data))


@main.command()
def models() -> None:
    """List the shipped expression models with their classes, sizes and metrics."""
    from keyfer.models.registry import DEFAULT_MODEL, get_record, list_models

    names = list_models()
    if not names:
        click.echo("no expression model is shipped yet")
    for name in names:
        record = get_record(name)
        size = record.weights_path.stat().st_size / 2**20
        valid = record.metrics.get("ferplus_valid", {})
        networks = "FaceMesh" + (
            " + dlib ResNet" if record.config.get("appearance", "none") != "none" else ""
        )
        scores = ", ".join(
            f"{label} {valid[key]:.4f}"
            for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))
            if key in valid
        )
        datasets = record.trained_datasets
        trained = f"trained on {', '.join(datasets)}; " if len(datasets) > 1 else ""
        click.echo(
            f"{name}{' (default)' if name == DEFAULT_MODEL else ''}: {len(record.classes)} "
            f"classes ({', '.join(record.classes)}), {networks}, {size:.1f} MiB head; "
            f"{trained}FERPlus Valid {scores or 'not measured'}"
        )


@main.command()
@click.pass_context
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@_json_option
@_jsonl_option
@click.option(
    "--csv", "csv_path", type=_RECORDS, help="One row per face, with probabilities (- for stdout)."
)
@click.option("--annotate", type=_DIR, help="Save annotated images/videos (box, label, landmarks).")
@click.option("--explain", is_flag=True, help="Add a heat overlay of keypoint importances.")
@click.option("--save-crops", type=_DIR, help="Save each face's aligned 192x192 crop here.")
@click.option("--camera", type=int, help="Run live on camera N (stop with Ctrl-C, or q in --show).")
@click.option("--show", is_flag=True, help="Show annotated frames in a window (needs GUI OpenCV).")
@click.option(
    "--every",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Process every N-th video frame.",
)
@click.option("--smooth", is_flag=True, help="Track faces in videos and smooth probabilities.")
@click.option("--tta", type=click.Choice(["flip"]), help="Average each face with its mirror.")
@_model_option
@click.option(
    "--tiling/--no-tiling",
    default=True,
    show_default=True,
    help="Also search tiles for small faces, in photos, videos and cameras alike "
    "(--no-tiling is faster but misses faces smaller than about an eighth of the frame).",
)
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    default="torch",
    show_default=True,
    help="Run the crop network with PyTorch or onnxruntime (needs keyfer[onnx]).",
)
@_fallback_option
@_device_option
@_threads_option
def predict(
    ctx: click.Context,
    paths: tuple[Path, ...],
    json_path: Path | None,
    jsonl_path: Path | None,
    csv_path: Path | None,
    annotate: Path | None,
    explain: bool,
    save_crops: Path | None,
    camera: int | None,
    show: bool,
    every: int,
    smooth: bool,
    tta: str | None,
    model_name: str,
    tiling: bool,
    backend: str,
    fallback: bool,
    device: str,
    threads: int | None,
) -> None:
    """Recognise the expression of every face in images, folders (walked recursively), videos
    (mp4, avi, mov, ...) or a camera.

    Records extend those of `keyfer landmarks` with "expression": {"label", "probabilities"}
    (calibrated, canonical class names), "keypoint_importance", "pose" {"yaw", "pitch", "roll"}
    in degrees and "reliable". A video gives one record per processed frame, with "frame",
    "time_s" and "corrupt_frames_before"; with --smooth each face also has a "track_id".
    """
    from keyfer.api import ExpressionRecognizer
    from keyfer.predict import PredictJob, gui_available

    if not paths and camera is None:
        raise click.UsageError("give image/video PATHS or --camera N")
    if show and not gui_available():
        raise click.UsageError(
            "--show needs OpenCV with GUI support; keyfer installs the headless build, so run "
            "`pip install opencv-python` in this environment to get windows"
        )
    files = {"--json": json_path, "--jsonl": jsonl_path, "--csv": csv_path}
    folders = {"--annotate": annotate, "--save-crops": save_crops}
    if camera is None:
        listing, names = _checked_run(paths, True, files, folders)
    else:
        check_outputs(files, folders)
        names = OutputNames()
    recognizer = ExpressionRecognizer(
        model_name,
        device,
        tiling=tiling,
        tta_flip=tta == "flip",
        threads=threads,
        backend=backend,
        fallback=fallback,
    )
    echo = json_path is None and jsonl_path is None and csv_path is None
    header = {"keyfer_version": __version__, "model": recognizer.model.info.name}
    with RecordWriter(
        json_path, jsonl_path, header, echo=echo, csv_path=csv_path, classes=recognizer.classes
    ) as writer:
        job = PredictJob(
            recognizer,
            writer,
            annotate,
            explain,
            save_crops,
            every,
            smooth,
            show,
            names=names,
        )
        if camera is not None:
            try:
                job.run_video(camera)
            except KeyboardInterrupt:
                pass
            return

        annotation = _annotation_path(names, annotate)
        summary = run_images(
            listing, job.describe_batch, writer, annotation, "predict", job.run_video
        )
    _finish_run(ctx, summary, {**files, **folders})


@main.command()
@click.argument("out", type=_FILE)
@_model_option
@click.option(
    "--format", "export_format", type=click.Choice(["onnx"]), default="onnx", show_default=True
)
def export(out: Path, model_name: str, export_format: str) -> None:
    """Export the aligned-crop -> (mesh, logits, importance) network to OUT (needs keyfer[onnx]).

    The export is checked against PyTorch with onnxruntime; the largest differences go to
    OUT with a .json suffix.
    """
    import json

    from keyfer.export import export_onnx

    check_outputs({"OUT": out, "OUT's .json record": out.with_suffix(".json")})
    model = create_model(model_name).eval()
    differences = export_onnx(model, out)
    info = model.info
    record = {
        "model": info.name,
        "format": export_format,
        "max_abs_difference": differences,
        "temperature": info.temperature,
        "classes": list(info.classes),
        "color_mode": info.color_mode,
        "margin": info.margin,
        "padding": info.padding,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    click.echo(
        f"wrote {out}; max |onnxruntime - torch|: "
        + ", ".join(f"{k} {v:.2e}" for k, v in differences.items())
    )


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@_model_option
@click.option(
    "--backend", type=click.Choice(["torch", "onnx", "all"]), default="all", show_default=True
)
@click.option("--repeats", type=click.IntRange(1), default=20, show_default=True)
@click.option(
    "--peer-python", help="Python of a venv with the `fer` package, timed on the same photos."
)
@_threads_option
@click.option("--out", type=_FILE, help="Also write the JSON here.")
def bench(
    paths: tuple[Path, ...],
    model_name: str,
    backend: str,
    repeats: int,
    peer_python: str | None,
    threads: int | None,
    out: Path | None,
) -> None:
    """Measure speed on examples/ and PATHS: ms per stage, faces/s at batch 1 and 32, crops/s,
    640x480 stream fps and peak memory; prints a JSON table."""
    import json

    from keyfer.bench import run_bench

    backends = ["torch", "onnx"] if backend == "all" else [backend]
    inputs = [Path("examples"), *paths] if Path("examples").is_dir() else list(paths)
    if not inputs:
        raise click.UsageError("no examples/ folder here: give image PATHS")
    result = run_bench(inputs, model_name, backends, repeats, peer_python)
    text = json.dumps(result, indent=1)
    click.echo(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":  # torchrun -m keyfer.cli train ...
    main()
